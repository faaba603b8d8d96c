"""The limits a channel's sends keep, and the scripts on Redis that decide every start.

Telegram allows about 1 message/s per chat, 20/min per group and 30/s overall. Feishu/Lark
allows 5 messages/s per chat (a group's 5 shared by its bots) and, per app, 50/s and
1,000/min (`LARK_LIMITS`). The rules are the same for both; only the numbers differ.

- Per chat, spacing runs from the moment the previous request *completed* (Telegram counts a
  message when it arrives, and a chat's messages are few): a chat is marked busy while its
  request is in flight and gets its next allowed time when it returns.
- Overall, two rules on Redis's clock, taken atomically, so several requests can be in
  flight at once (the round trip to Telegram does not cap throughput) and replicas share
  the budget: starts are spaced (33 ms; a slot taken late does not push the next one back,
  and up to two missed slots are caught up, 11 ms apart), and at most 30 sends may be in
  flight or have returned within the last second. Telegram counts a message when it
  arrives, between its start and its return, so no second can see more than 30 arrivals
  however late a busy process gets its requests out; the rate is 30 per (1 s + round trip).
- One script gives the starts of several waiting sends at once (the slots of the next
  100 ms), each send's chat and bot-wide rules together; the returns of earlier sends ride
  on it. Every flood key of a channel is in one hash tag (one node of a cluster): the budget
  is one for the whole bot, and 30 sends/s are little load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from conversation.identity import LARK, TELEGRAM

# Returns of earlier sends, recorded first by TAKE and on their own by DONE. ARGV[n0] is the
# number of (member, time) pairs of the bot-wide window that follow it; after them come
# (chat, time, interval) triples: the chat is no longer busy, and its next send may start
# `interval` ms after its return (times in ms on Redis's clock, never earlier than real).
RETURNS = """
local function record_returns(n0)
  local pairs_end = n0 + 2 * tonumber(ARGV[n0])
  for i = n0 + 1, pairs_end, 2 do redis.call('ZADD', KEYS[2], 'XX', tonumber(ARGV[i + 1]), ARGV[i]) end
  for i = pairs_end + 1, #ARGV, 3 do
    redis.call('ZADD', KEYS[3], tonumber(ARGV[i + 1]) + tonumber(ARGV[i + 2]), ARGV[i])
    redis.call('ZREM', KEYS[4], ARGV[i])
  end
  if pairs_end < #ARGV then redis.call('PEXPIRE', KEYS[3], 120000) end
end
"""
# The starts of up to ARGV[9] waiting sends, in the order given (every key in the channel's
# flood slot): {ms until the next slot, then per send {now, ms until its start, 0} when
# given a slot; or {0, ms to wait, 1} when its chat is not free (busy: a request to it is in
# flight until its return, or ARGV[6] ms if its sender dies; or before its next allowed
# time); or {0, ms to wait, 0} when the bot-wide rules hold it and every send after it (its
# slot beyond the ARGV[8] ms given out at once, or the window full of sends in flight)}.
# Those rules are two, on Redis's clock, so replicas share them:
# - spacing: slots ARGV[1] ms apart, each following the one just due, so a late wake-up
#   does not cost throughput; after a gap, up to two missed slots may be caught up (the
#   window's returns come in bunches: waiting out the spacing after each would lose ~4% of
#   the rate), so any period T holds at most T / interval + 3 starts. Those are a third of
#   an interval apart (`last`, KEYS[5]: the latest slot given), never at one moment: a
#   bunch given at once left the window as one and was given at once again a window later,
#   for the whole burst, and a second that missed a bunch of three held 27 sends
#   (bench/e2e: 292-410 of a 1,000-chat burst's 3,153 slots within 2 ms of the one before).
#   The slots of the next ARGV[8] ms are given out at once, so a busy process's round trips
#   do not space its starts;
# - a window: at a send's slot, fewer than ARGV[3] sends may be in flight or have returned
#   within the window before it (ARGV[2] ms), or its slot moves to a window after the
#   return that makes room. Telegram counts a message when it arrives, somewhere between its
#   start and its return; a send arrives no earlier than its slot, so however late requests
#   leave a busy process, no window of that length sees more arrivals than the limit. A send
#   is counted from the moment its slot is given, scored its lapse time (ARGV[4]: a dead
#   sender's lapses) until its return is recorded.
TAKE = (
    RETURNS
    + """
local k = tonumber(ARGV[9])
record_returns(10 + 2 * k)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lapse, horizon = tonumber(ARGV[4]), tonumber(ARGV[8])
local base = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now - 2 * interval)
local gap = math.max(1, math.floor(interval / 3))
local last = tonumber(redis.call('GET', KEYS[5]) or '0')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
local out, taken, held = {0}, 0, nil
for j = 0, k - 1 do
  local chat, member = ARGV[10 + 2 * j], ARGV[11 + 2 * j]
  local slot = math.max(base, now, last + gap)
  if not held then
    -- Sends that could arrive within a window of this one (it arrives no earlier than its
    -- slot): in flight, or returned less than a window before the slot.
    local after = '(' .. (slot - window)
    local over = redis.call('ZCOUNT', KEYS[2], after, '+inf') - limit + 1
    if over > 0 then
      -- Full: the slot moves to a window after the return that makes room; if that send is
      -- still in flight (scored its lapse), it may return any moment: ask again soon.
      local r = redis.call('ZRANGEBYSCORE', KEYS[2], after, '+inf', 'WITHSCORES', 'LIMIT', over - 1, 1)
      local left = tonumber(r[2])
      if left > now then held = tonumber(ARGV[5]) else slot = math.max(left + window + 1, last + gap) end
    end
    -- Beyond the slots given out at once: asked again an interval before it is due, as a
    -- take before a slot the spacing set, so that the next take gives it and the slots of
    -- the horizon after it, not that slot alone (a full window: 0.43-0.49 takes a send,
    -- 0.35 so, bench/e2e at 1,000 chats).
    if not held and slot > now + horizon then held = math.max(1, slot - now - math.min(interval, horizon)) end
  end
  local busy = tonumber(redis.call('ZSCORE', KEYS[4], chat) or '0')
  local ready = tonumber(redis.call('ZSCORE', KEYS[3], chat) or '0')
  if held then
    table.insert(out, 0); table.insert(out, held); table.insert(out, 0)
  elseif busy > now then
    table.insert(out, 0); table.insert(out, tonumber(ARGV[7])); table.insert(out, 1)
  elseif ready > now then
    table.insert(out, 0); table.insert(out, ready - now); table.insert(out, 1)
  else
    table.insert(out, now); table.insert(out, slot - now); table.insert(out, 0)
    redis.call('ZADD', KEYS[2], now + lapse, member)
    -- The chat is busy until its return (or the lapse).
    redis.call('ZADD', KEYS[4], now + tonumber(ARGV[6]), chat)
    -- The spacing runs from the slot given when it is later than the spacing's (the window
    -- moved it, or the catch-up's third), with the same two slots to catch up: returns
    -- leave the window in bunches, and the sends they make room for need not wait out the
    -- spacing one after another (~2% of the rate).
    base = math.max(base, slot - 2 * interval)
    base, taken, last = base + interval, taken + 1, slot
  end
end
if taken > 0 then
  redis.call('SET', KEYS[1], base, 'PX', 120000)
  redis.call('SET', KEYS[5], last, 'PX', 120000)
  redis.call('PEXPIRE', KEYS[2], lapse + window)
  redis.call('PEXPIRE', KEYS[4], 120000)
  -- What is past is forgotten now and then (one take in 8, by the clock): entries are read
  -- by score, stale ones only take room.
  if now % 8 == 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  end
end
out[1] = math.max(0, base - now)
return out
"""
)
# Returns when no start carries them soon (ARGV as in RETURNS, from ARGV[1]).
DONE = RETURNS + "record_returns(1)\nreturn 1\n"
# A request still in flight: its chat stays busy ARGV[2] ms more (only if still marked).
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
"""


@dataclass(frozen=True)
class FloodLimits:
    name: str  # the channel (conversation.identity): its bot-wide keys are its own
    private_ms: int  # per chat: from one message's return to the next start
    group_ms: int
    global_ms: int  # bot-wide spacing of starts
    window_ms: int  # bot-wide: at most `window_limit` sends in flight or returned within it
    window_limit: int
    is_group: Callable[[str], bool] = lambda native: False


TELEGRAM_LIMITS = FloodLimits(
    TELEGRAM,
    private_ms=1050,  # 1 message/s per chat
    group_ms=3050,  # 20 messages/min per group
    global_ms=33,  # spacing: 30.3 starts/s at most (the window keeps any second to 30)
    window_ms=1000,  # Telegram's window: about 30 messages per second overall
    # Telegram's 30: every send that could arrive within a second is counted, from its start
    # to its return as recorded no earlier than it was, so no second sees more than 30.
    window_limit=30,
    is_group=lambda native: native.startswith("-"),  # groups and channels have negative ids
)
# Feishu's "send message" and "update card" limits: 5/s per chat, and per app 50/s and
# 1,000/min. The spacing keeps under the minute's limit (16.1/s); the window under 50/s.
LARK_LIMITS = FloodLimits(LARK, private_ms=210, group_ms=210, global_ms=62, window_ms=1000, window_limit=45)
# Kept for the benchmarks and tests that name Telegram's numbers.
PRIVATE_INTERVAL_MS = TELEGRAM_LIMITS.private_ms
GROUP_INTERVAL_MS = TELEGRAM_LIMITS.group_ms
GLOBAL_INTERVAL_MS = TELEGRAM_LIMITS.global_ms
WINDOW_MS = TELEGRAM_LIMITS.window_ms
WINDOW_LIMIT = TELEGRAM_LIMITS.window_limit
LAPSE_MS = 30_000  # a send in flight counts in the window this long at most (its sender may be dead)
# A chat is busy while a request to it is in flight: the mark lapses this soon after its
# sender dies (a killed replica must not hold its chats up), and is renewed while it lives.
IN_FLIGHT_MS = 3_000
RENEW_S = 1.0
BUSY_POLL_MS = 20  # how often a sender looks again while another request to its chat is in flight
DONE_FLUSH_S = 0.05  # returns not carried by a start by then are recorded on their own
DRIFT_MS_PER_S = 1.0  # most that Redis's clock and ours drift apart: twice NTP's largest slew


# Slots given out at once: those due within this many bot-wide intervals (~100 ms for
# Telegram), to at most TAKE_AT_MOST waiting sends a round trip. A take starts one interval
# before the next slot is due, so the round trip and the loop's delays of a busy process
# fall within the lead and the two slots a late take may catch up.
AHEAD_SLOTS = 3
TAKE_AT_MOST = 4
