"""A small built-in example agent: customer-support triage with tools.

It shows what an instrumented agent logs, and gives ``flywheel demo`` traffic
to work on before the real tool-calling agent and workload are installed.
Its "model" is a deterministic rule (named ``example-rules``), not an LLM;
tool failures, retries, fallbacks and user reactions are drawn from a seeded
random generator, so runs are reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flywheel.sdk import Flywheel

__all__ = ["ExampleRun", "run_example_agent"]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {arg: {"type": "string"} for arg in args},
                "required": list(args),
            },
        },
    }
    for name, description, args in (
        ("lookup_order", "Find an order by id", ("order_id",)),
        ("issue_refund", "Refund an order", ("order_id", "reason")),
        ("reset_password", "Send a password reset link", ("email",)),
        ("update_address", "Change the shipping address of an order", ("order_id", "address")),
        ("escalate_to_human", "Hand the conversation to a human agent", ("summary",)),
    )
]

INTENTS = {
    "order_status": ("Where is my order {order}?", "lookup_order"),
    "refund": ("I want a refund for order {order}, it arrived broken.", "issue_refund"),
    "password": ("I can't log in, please reset my password.", "reset_password"),
    "address": ("Please ship order {order} to 12 Elm Street instead.", "update_address"),
}

KNOWLEDGE = {
    "order_status": "Orders ship within 2 business days; tracking is in the confirmation mail.",
    "refund": "Broken items are refunded in full within 30 days of delivery.",
    "password": "Reset links expire after 1 hour.",
    "address": "The address can change until the order has shipped.",
}


@dataclass
class ExampleRun:
    tasks: int = 0
    succeeded: int = 0
    task_ids: list[str] = field(default_factory=list)


def _arguments(tool: str, order: str) -> dict[str, Any]:
    return {
        "lookup_order": {"order_id": order},
        "issue_refund": {"order_id": order, "reason": "damaged"},
        "reset_password": {"email": "customer@example.com"},
        "update_address": {"order_id": order, "address": "12 Elm Street"},
    }[tool]


def run_example_agent(
    fw: Flywheel,
    *,
    tasks: int = 200,
    sessions: int = 40,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ExampleRun:
    """Serve ``tasks`` simulated requests, logging everything through ``fw``."""
    rng = random.Random(seed)
    run = ExampleRun()
    for i in range(tasks):
        intent = rng.choice(sorted(INTENTS))
        template, tool = INTENTS[intent]
        order = f"A{rng.randint(1000, 9999)}"
        question = template.format(order=order)
        session = f"session-{rng.randrange(sessions)}"
        with fw.task(session_id=session, input=question, metadata={"intent": intent}) as task:
            fw.agent_config(session_id=session)
            task.retrieval(
                query=question,
                documents=[{"id": f"kb-{intent}", "content": KNOWLEDGE[intent], "score": 0.82}],
                latency_ms=rng.uniform(2, 8),
            )
            task.file_access(path=f"policies/{intent}.md", mode="read", bytes=len(KNOWLEDGE[intent]))
            task.reasoning(f"The customer asks about {intent.replace('_', ' ')}; {tool} handles it.")
            messages = [
                {"role": "system", "content": "You are a support agent. Use the tools."},
                {"role": "user", "content": question},
            ]
            arguments = _arguments(tool, order)
            call = {"id": f"call_{i}", "type": "function", "function": {"name": tool, "arguments": arguments}}
            task.llm_call(
                model="example-rules",
                messages=messages,
                tools=TOOLS,
                response={"role": "assistant", "content": None, "tool_calls": [call]},
                input_tokens=60 + len(question) // 4,
                output_tokens=18,
                latency_ms=rng.uniform(40, 120),
            )
            ok = False
            attempts = 1 + (rng.random() < 0.25) + (rng.random() < 0.1)
            for attempt in range(1, attempts + 1):
                failed = attempt < attempts or rng.random() < 0.12
                task.tool_call(
                    name=tool,
                    arguments=arguments,
                    output=None if failed else {"status": "ok", "order": order},
                    error="TimeoutError: backend did not answer in 5 s" if failed else None,
                    attempt=attempt,
                    latency_ms=rng.uniform(20, 400),
                )
                ok = not failed
            if not ok:
                task.tool_call(
                    name="escalate_to_human",
                    arguments={"summary": question},
                    output={"ticket": f"T{i}"},
                    fallback=True,
                    latency_ms=rng.uniform(5, 30),
                )
            answer = (
                f"Done: {tool.replace('_', ' ')} for {order}."
                if ok
                else "I could not complete this; a colleague will contact you."
            )
            confidence = round(rng.uniform(0.75, 0.97) if ok else rng.uniform(0.2, 0.6), 3)
            task.finish(output=answer, success=ok, confidence=confidence)
        run.tasks += 1
        run.succeeded += ok
        run.task_ids.append(task.id)
        reaction = rng.random()
        if ok and reaction < 0.3:
            fw.feedback(task.id, thumbs=1, rating=rng.choice([4, 5]))
        elif not ok and reaction < 0.5:
            fw.feedback(task.id, thumbs=-1, comment="Still not solved.")
            if rng.random() < 0.3:
                fw.correct(task.id, output=f"Done: {tool.replace('_', ' ')} for {order}.")
        elif not ok and reaction < 0.7:
            fw.feedback(task.id, retried=True)
        if progress:
            progress(i + 1)
    return run
