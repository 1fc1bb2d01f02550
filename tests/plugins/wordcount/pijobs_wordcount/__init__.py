"""word-count: how often each word occurs in a text, the most frequent first, as JSON."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from pijobs.functions import BusinessFunction, JobRefusedError, OutputFile, RunContext

WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


class WordCountParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1, description="the text to count the words of")
    top: StrictInt = Field(default=10, ge=1, le=1000, description="how many of the most frequent words")
    lowercase: StrictBool = Field(default=True, description="count 'The' and 'the' as one word")
    pause_seconds: StrictInt = Field(
        default=0, ge=0, le=600, description="wait this long (reporting progress) before counting"
    )


class WordCountLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_text_chars: StrictInt = Field(default=100_000, ge=1, le=200_000)


class WordCount(BusinessFunction):
    name = "word-count"
    version = "1.0.0"
    title = "Word count"
    description = "Counts the words of a text and returns the most frequent ones with their counts, as JSON."
    request_model = WordCountParams
    error_codes = frozenset({"no_words"})
    limits_model = WordCountLimits
    instance_types = ("c7i.large",)
    stack_parameter_names = ("TopWords",)

    def check(self, params: WordCountParams, limits: WordCountLimits) -> list[tuple[str, str]]:
        if len(params.text) > limits.max_text_chars:
            return [("text", f"must be at most {limits.max_text_chars} characters")]
        return []

    def instance_type(self, params: WordCountParams) -> str:
        return "c7i.large"

    def deadline_seconds(self, params: WordCountParams) -> int:
        return 300 + params.pause_seconds

    def stack_parameters(self, params: WordCountParams) -> dict[str, str]:
        return {"TopWords": str(params.top)}

    def run(self, ctx: RunContext) -> OutputFile:
        params: WordCountParams = ctx.params
        started = time.monotonic()
        while (waited := time.monotonic() - started) < params.pause_seconds:
            ctx.progress(0.9 * waited / params.pause_seconds)  # raises once the job is cancelled
            time.sleep(0.2)
        text = params.text.lower() if params.lowercase else params.text
        counts = Counter(WORD.findall(text))
        if not counts:
            raise JobRefusedError("the text has no words", code="no_words")
        ctx.progress(1.0)
        metadata = {"words": sum(counts.values()), "distinct": len(counts)}
        document = {**metadata, "top": [[word, count] for word, count in counts.most_common(params.top)]}
        path = ctx.scratch / "word-count.json"
        path.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return OutputFile(path, "word-count.json", "application/json", metadata)
