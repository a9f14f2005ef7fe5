"""One-shot model calls (decomposition, gate reviews, context summaries) through litellm.

litellm is imported lazily: the roles that never call a model never pay for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from agents.errors import AgentError
from agents.settings import Settings
from agents.spans import work_span
from schemas.usage import Usage

log = logging.getLogger(__name__)


class ModelError(AgentError):
    """A model call failed; the message never contains the API key."""


@dataclass(frozen=True)
class ModelConfig:
    model: str
    api_key: SecretStr | None = None
    base_url: str | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    num_retries: int = 2
    timeout_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelConfig | None:
        if not settings.llm_model:
            return None
        return cls(
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            base_url=settings.llm_base_url,
            input_cost_per_token=settings.llm_input_cost_per_token,
            output_cost_per_token=settings.llm_output_cost_per_token,
            num_retries=settings.llm_num_retries,
            timeout_s=settings.llm_timeout_s,
        )

    def redact(self, text: str) -> str:
        return without_key(text, self.api_key)


def without_key(text: str, api_key: SecretStr | None) -> str:
    """`text` with the key taken out (a key too short to be one is left alone)."""
    key = api_key.get_secret_value() if api_key else ""
    return text.replace(key, "***") if len(key) >= 4 else text


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage


def import_litellm() -> Any:
    # Without this, importing litellm fetches its price list from the internet, and
    # blocks (or deadlocks) on a machine without one.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    # Its INFO lines go to stdout, into whatever the user is reading.
    logging.getLogger("LiteLLM").setLevel(logging.WARNING)
    return litellm


class ModelClient:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    async def complete(self, system: str, user: str, *, max_tokens: int = 4000) -> Completion:
        """One call, as a span named as OpenTelemetry's GenAI conventions name them, with
        its tokens and cost."""
        model = self.config.model
        with work_span(f"chat {model}", attributes={"gen_ai.request.model": model}) as span:
            done = await self._complete(system, user, max_tokens)
            span.set_attribute("gen_ai.usage.input_tokens", done.usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", done.usage.completion_tokens)
            span.set_attribute("omoi.cost_usd", done.usage.cost_usd)
            return done

    async def _complete(self, system: str, user: str, max_tokens: int) -> Completion:
        litellm = await asyncio.to_thread(import_litellm)
        cfg = self.config
        kwargs: dict[str, Any] = {
            "model": cfg.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "max_tokens": max_tokens,
            "timeout": cfg.timeout_s,
            "num_retries": cfg.num_retries,
        }
        if cfg.api_key is not None:
            kwargs["api_key"] = cfg.api_key.get_secret_value()
        if cfg.base_url:
            kwargs["api_base"] = cfg.base_url
        try:
            response = await litellm.acompletion(**kwargs)
        except Exception as exc:  # noqa: BLE001 - litellm raises any of dozens of types
            raise ModelError(cfg.redact(f"{cfg.model}: {type(exc).__name__}: {exc}")) from None
        text = response.choices[0].message.content or ""
        return Completion(text=text, usage=self._usage(litellm, response))

    def _usage(self, litellm: Any, response: Any) -> Usage:
        raw = getattr(response, "usage", None)
        prompt = int(getattr(raw, "prompt_tokens", 0) or 0)
        completion = int(getattr(raw, "completion_tokens", 0) or 0)
        cfg = self.config
        if cfg.input_cost_per_token is not None or cfg.output_cost_per_token is not None:
            cost = prompt * (cfg.input_cost_per_token or 0.0) + completion * (
                cfg.output_cost_per_token or 0.0
            )
        else:
            try:
                cost = float(litellm.completion_cost(completion_response=response))
            except Exception:  # noqa: BLE001 - litellm has no price for this model
                cost = 0.0
        return Usage(
            prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, iterations=1
        )
