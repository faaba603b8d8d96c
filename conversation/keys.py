"""Every Redis key name of the bot, built in one place.

Layout (`P` is the prefix, default `bjb`; a hash tag `{…}` keeps each group in one Redis
Cluster slot, so every multi-key command and script stays within one slot):

    P:{chat:<id>}:state          JSON ChatState, compare-and-set on its SHA-1 (<id>: a Telegram
                                 chat's number as before channels were named, else the
                                 channel-qualified id, e.g. lark:oc_…; conversation/identity.py)
    P:{chat:<id>}:lock           per-chat lock of an earlier release: a save waits while it is held
    P:{chat:<id>}:out            HASH seq -> effect not yet performed (the chat's outbox)
    P:{jobs:<k>}:due             ZSET job_id -> next poll (ms): shard k of the watcher's schedule
    P:{jobs:<k>}:job:<job_id>    HASH of the watched job (chat, msg, status, summary, done, …)
    P:{jobs:<k>}:finished        HASH status -> jobs finished with it (metrics)
    P:{intent:<id>}              HASH state PENDING|SUBMITTING|SUBMITTED|REJECTED|UNKNOWN, job_id, …
    P:{file:<file_id>}:rows      record count of a file this bot uploaded (TTL 30 days)
    P:{chat:<id>}:upd:<update_id> update lease "run:<replica>" (PX), then "done" (TTL one day);
    P:{upd:<update_id>}          the same for an update of no chat (and before this layout)
    P:{flood}:all                the bot-wide next send slot (one key: the budget is bot-wide)
    P:{flood}:log                the bot-wide sends of the last second and those in flight (zset)
    P:{flood}:ready              ZSET chat -> its next allowed send (ms), while in the future
    P:{flood}:busy               ZSET chat -> lapse of the send to it in flight (ms)
    P:{flood}:last               the bot-wide latest slot given (ms)
    P:{flood:<channel>}:…        the same for channels other than Telegram (e.g. {flood:lark})
    P:{replicas}                 ZSET replica id -> last heartbeat (ms)
    P:{rep:<id>}:chats           SET of chats with work in flight on that replica
    P:{rep:<id>}:reaper          lease of the replica that takes a dead one's work over
    P:{spend}:limits             HASH <scope>:<period> -> limit set by an admin (micro-units; -1 none)
    P:{spend}:d:<YYYYMMDD>       HASH <scope> -> spent that UTC day (micro-units; TTL 3 days)
    P:{spend}:m:<YYYYMM>         HASH <scope> -> spent that UTC month (TTL 40 days)
    P:{spend}:res                HASH submit intent -> its reservation (settled once, then deleted)
    P:{approval}:<id>            HASH an approval asked of the admins (state, requester, job, …)
    P:{approval}:due             ZSET approval id -> when it expires (ms)
    P:{balance}:short            a shortfall episode the admins were told of (SET NX)
    P:{audit}                    STREAM of submits, approvals, rejections, budget changes (capped)

Every budget a submit reserves against (the user's and the chat's, day and month) is in the
one slot `{spend}`: a single script checks and reserves them all at once. A submit is rare
next to messages, so one slot does not limit throughput.

A job's shard is crc32(job_id) mod `shards`: the schedule is spread over several slots
(nodes of a cluster) instead of one hot key. `shards` must stay the same for a deployment's
life; `Store.adopt_legacy` moves records of the single-shard layout (`bjb:{jobs}:…`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from conversation import identity

DEFAULT_PREFIX = "bjb"
DEFAULT_SHARDS = 8


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX
    shards: int = DEFAULT_SHARDS

    def chat(self, chat_id: int | str, part: str) -> str:
        return f"{self.prefix}:{{chat:{identity.key_part(chat_id)}}}:{part}"

    def chat_pattern(self) -> str:
        return f"{self.prefix}:{{chat:*}}:state"

    def chat_of(self, state_key: str) -> str:
        """The qualified chat id of a chat's key."""
        return identity.qualify(state_key.split("{chat:", 1)[1].split("}", 1)[0])

    def shard(self, job_id: str) -> int:
        return zlib.crc32(job_id.encode()) % self.shards

    def due(self, shard: int) -> str:
        return f"{self.prefix}:{{jobs:{shard}}}:due"

    def job_prefix(self, shard: int) -> str:
        return f"{self.prefix}:{{jobs:{shard}}}:job:"

    def job(self, job_id: str) -> str:
        return self.job_prefix(self.shard(job_id)) + job_id

    def active(self, shard: int) -> str:
        """The shard's jobs not finished yet (a set): what a restart resumes, without
        reading the finished jobs kept for 30 days."""
        return f"{self.prefix}:{{jobs:{shard}}}:active"

    def indexed(self, shard: int) -> str:
        """Set once the shard's `active` set holds every unfinished job (state written
        before the set existed is indexed by one scan)."""
        return f"{self.prefix}:{{jobs:{shard}}}:indexed"

    def finished(self, shard: int) -> str:
        return f"{self.prefix}:{{jobs:{shard}}}:finished"

    def intent(self, intent_id: str) -> str:
        return f"{self.prefix}:{{intent:{intent_id}}}"

    def file_rows(self, file_id: str) -> str:
        return f"{self.prefix}:{{file:{file_id}}}:rows"

    def update(self, update_id: int | str, chat_id: int | str | None = None) -> str:
        """A delivered update's lease: in its chat's slot when the chat is known, so the
        write that applies its event marks it done too."""
        if chat_id is not None:
            return self.chat(chat_id, f"upd:{update_id}")
        return f"{self.prefix}:{{upd:{update_id}}}"

    @property
    def flood_all(self) -> str:
        return self.flood_all_of(identity.TELEGRAM)

    @property
    def flood_log(self) -> str:
        return self.flood_log_of(identity.TELEGRAM)

    def _flood(self, channel: str) -> str:
        # Telegram's as before channels were named; each channel's budget is its own.
        return (
            f"{self.prefix}:{{flood}}"
            if channel == identity.TELEGRAM
            else f"{self.prefix}:{{flood:{channel}}}"
        )

    def flood_all_of(self, channel: str) -> str:
        return f"{self._flood(channel)}:all"

    def flood_log_of(self, channel: str) -> str:
        return f"{self._flood(channel)}:log"

    def flood_ready_of(self, channel: str) -> str:
        return f"{self._flood(channel)}:ready"

    def flood_busy_of(self, channel: str) -> str:
        return f"{self._flood(channel)}:busy"

    def flood_last_of(self, channel: str) -> str:
        return f"{self._flood(channel)}:last"

    @property
    def replicas(self) -> str:
        return f"{self.prefix}:{{replicas}}"

    def replica_chats(self, replica: str) -> str:
        return f"{self.prefix}:{{rep:{replica}}}:chats"

    def reaper(self, replica: str) -> str:
        return f"{self.prefix}:{{rep:{replica}}}:reaper"

    def health(self, replica: str) -> str:
        return f"{self.prefix}:{{rep:{replica}}}:health"

    def spend(self, part: str) -> str:
        return f"{self.prefix}:{{spend}}:{part}"

    def approval(self, approval_id: str) -> str:
        return f"{self.prefix}:{{approval}}:{approval_id}"

    @property
    def approvals_due(self) -> str:
        return f"{self.prefix}:{{approval}}:due"

    @property
    def balance_short(self) -> str:
        return f"{self.prefix}:{{balance}}:short"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:{{audit}}"


# Tests give each test its own prefix here, so that they touch only their own keys.
default = Keys()


def current() -> Keys:
    return default
