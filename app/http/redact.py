"""What a `read` token is not shown: the values of config keys that may carry secrets (the keys stay)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SECRET_CONFIG_KEYS = ("user.user-data", "user.vendor-data", "user.network-config")
SECRET_CONFIG_PREFIXES = ("environment.", "cloud-init.")
SECRET_CONFIG_WORDS = ("password", "secret", "token")
REDACTED = "[redacted]"


def secret_config_key(key: str) -> bool:
    """Whether an instance (or profile) config key may carry a secret: the command environment, cloud-init data,
    and any key that names a password or secret (`user.db-password`)."""
    lowered = key.lower()
    return (lowered in SECRET_CONFIG_KEYS or lowered.startswith(SECRET_CONFIG_PREFIXES)
            or any(word in lowered for word in SECRET_CONFIG_WORDS))


def redact_secret_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with the value of every secret-bearing key replaced by "[redacted]" (the keys stay)."""
    return {k: REDACTED if secret_config_key(k) and v not in (None, "") else v for k, v in config.items()}


def redact_results(value: Any) -> Any:
    """`value` (a job's result) with the secret values of every `config` map in it redacted (a container's view,
    a list of them...)."""
    if isinstance(value, dict):
        return {k: redact_secret_config(v) if k == "config" and isinstance(v, dict) else redact_results(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_results(item) for item in value]
    return value
