"""Every setting the code reads is listed in .env.example and the README."""

from pathlib import Path

from batchjob.input.limits import Limits
from batchjob.settings import ServiceSettings
from bot.telegram.settings import TelegramSettings
from conversation.settings import ConversationSettings

ROOT = Path(__file__).resolve().parents[1]


def test_every_variable_is_documented():
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    names = [f"BATCHJOB_{n.upper()}" for n in ServiceSettings.model_fields]
    names += [f"BOT_{n.upper()}" for n in ConversationSettings.model_fields]
    names += ["REDIS_URL", "REDIS_CLUSTER", "BOT_REPLICA_ID"]
    names += [n.upper() for n in TelegramSettings.model_fields]
    for name in names:
        assert name in example, name
        assert name in readme, name
    for field in Limits.__dataclass_fields__:
        assert f"BATCHJOB_LIMIT_{field.upper()}" in readme
