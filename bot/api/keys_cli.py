"""`batchjob-bot keys create|list|revoke`: the operator's API keys (kept in REDIS_URL's Redis)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="batchjob-bot keys",
        description="API keys for agents (the HTTP API and MCP). A new key is shown once; only its hash "
        "is kept, in the Redis of REDIS_URL (with BOT_REDIS_PREFIX).",
    )
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("create", help="make a key and print it (once)")
    c.add_argument("--name", default="", help="a label for the operator (e.g. nightly-reports)")
    c.add_argument(
        "--owner",
        default="",
        help="whose budgets and approvals apply, as /whoami shows it (e.g. tg:42); default: the key itself",
    )
    c.add_argument(
        "--confirm",
        action="store_true",
        help="its submissions are submitted after the checks without POST …/confirm (default: they wait)",
    )
    sub.add_parser("list", help="the keys: id, name, owner, created, revoked (never the key)")
    r = sub.add_parser("revoke", help="revoke a key by its id")
    r.add_argument("key_id")
    return p


async def run(argv: list[str]) -> int:
    from bot.api.keys import ApiKeys
    from conversation.app import keys_for
    from conversation.settings import ConversationSettings
    from conversation.store import connect

    args = parser().parse_args(argv)
    if not os.environ.get("REDIS_URL"):
        print(
            "batchjob-bot keys: set REDIS_URL (keys kept in an in-process store would be lost)",
            file=sys.stderr,
        )
        return 3
    redis, _ = await connect(os.environ["REDIS_URL"])
    keys = ApiKeys(redis, keys_for(ConversationSettings()))
    try:
        if args.action == "create":
            key, rec = await keys.create(args.name, args.owner, args.confirm)
            print(
                f"key: {key}\nid: {rec.id}\nowner: {rec.user}\ncallback signing secret: {rec.webhook_secret}"
            )
            print("Shown once: store it now.", file=sys.stderr)
        elif args.action == "list":
            for k in await keys.list():
                made = time.strftime("%Y-%m-%d", time.gmtime(k.created_ms / 1000))
                state = "revoked" if k.revoked else "live"
                confirm = "yes" if k.confirm else "no"
                print(f"{k.id}  {state:7}  {made}  owner={k.user}  confirm={confirm}  {k.name}")
        else:
            if not await keys.revoke(args.key_id):
                print(f"batchjob-bot keys: no key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
    finally:
        await redis.aclose()
    return 0


def main(argv: list[str]) -> int:
    return asyncio.run(run(argv))
