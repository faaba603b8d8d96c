"""Channel-qualified ids, and the upgrade from a Redis written before ids named their channel."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from batchjob.client import BatchJobClient
from conversation import identity, keys
from conversation.app import ConversationApp
from conversation.events import CommandReceived, TextReceived
from conversation.settings import ConversationSettings
from conversation.store import Store, now_ms
from conversation.watcher import Watcher
from tests.conftest import TOKEN
from tests.conversation.test_watcher import run_until_empty, settings, submit_jobs


def test_bare_ids_are_telegrams_and_qualified_ids_stay():
    assert identity.qualify(42) == identity.qualify("42") == "tg:42"
    assert identity.qualify("-1001") == "tg:-1001"
    assert identity.qualify("lark:oc_abc") == "lark:oc_abc"
    assert identity.qualify(0) == identity.qualify("") == ""
    assert identity.key_part("tg:42") == identity.key_part(42) == "42"  # Telegram keys as before
    assert identity.key_part("lark:oc_abc") == "lark:oc_abc"
    assert identity.native("lark:oc_abc") == "oc_abc" and identity.channel_of("7") == "tg"
    assert ConversationSettings(admin_ids="7, lark:ou_a").admin_ids == {"tg:7", "lark:ou_a"}


@given(st.text(max_size=40))
def test_qualify_is_idempotent_and_keys_stay_in_the_chat_slot(raw):
    q = identity.qualify(raw)
    assert identity.qualify(q) == q
    key = keys.Keys().chat(q, "state")
    assert key.startswith("bjb:{chat:") and key.count("}") >= 1


async def test_a_redis_written_before_channels_is_read_as_it_is(redis, channel, sandbox, write, tmp_path):
    """The exact keys and values the release before channel-qualified ids wrote: a chat with
    a pending confirmation and a watched job submitted by Telegram user 7, the job's record
    naming chat "42", and a dead replica listing chat "42" with a message left in its outbox."""
    k = keys.current()
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        (job_id,) = await submit_jobs(client, write, 1)
        old_state = {
            "v": 1,
            "phase": "idle",
            "lang": "en",
            "jobs": [job_id],
            "recent": [job_id],
            "owners": {job_id: 7},
            "applied": ["tg:1001"],
            "out_seq": 1,
        }
        await redis.set(f"{k.prefix}:{{chat:42}}:state", json.dumps(old_state))
        reply = {"t": "Reply", "parts": [["cmd.lang_usage", {}]], "buttons": [], "document": None}
        await redis.hset(f"{k.prefix}:{{chat:42}}:out", "1", json.dumps(reply))
        job_key = k.job(job_id)
        await redis.hset(
            job_key, mapping={"chat": "42", "owner": "7", "intent": "", "lang": "en", "count": "2"}
        )
        await redis.hset(job_key, mapping={"msg": "1001", "started_ms": now_ms()})
        await redis.zadd(k.due(k.shard(job_id)), {job_id: now_ms()})
        await redis.sadd(k.active(k.shard(job_id)), job_id)
        await redis.sadd(k.replica_chats("old"), "42")
        await redis.zadd(k.replicas, {"old": now_ms() - 600_000})

        app = ConversationApp(
            redis, client, channel, settings(tmp_path, replica_lease_seconds=5), replica="new"
        )
        state = await app.store.load("tg:42")
        assert state.owners == {job_id: "tg:7"} and state.jobs == [job_id]
        # The dead replica's chat is resumed under its qualified id; the kept message goes out.
        assert await app.recovery.reap_once() == 1
        assert channel.messages[-1][0] == "tg:42" and await app.leases.dead() == []
        # The submitter (Telegram user 7, as the old state says) may still cancel the job.
        await app.runner.handle("tg:42", CommandReceived("cancel", (job_id,), user_id="tg:8"))
        assert "Only the person who submitted" in channel.texts(42)[-1]
        await app.runner.handle("tg:42", CommandReceived("cancel", (job_id,), user_id=7))
        assert "Only the person who submitted" not in channel.texts(42)[-1]
        # The watcher finishes the old job in chat 42: its progress message edited, one summary.
        store = Store(redis)
        await run_until_empty(store, Watcher(store, client, channel, settings(tmp_path), lease_ms=100))
        assert sum("finished" in t for t in channel.texts("tg:42")) == 1
        assert all(chat == "tg:42" and str(mid) == "1001" for chat, mid, _ in channel.edits)
        # And the chat carries on as any chat: its state is still under the old key name.
        await app.runner.handle(42, TextReceived("hello"))
        assert await redis.exists(f"{k.prefix}:{{chat:42}}:state") == 1
        assert not [key async for key in redis.scan_iter(match=f"{k.prefix}:{{chat:tg:*")]
