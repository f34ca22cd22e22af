"""Student baseline: the local Gemma 3 270M (base) on BFCL single-turn categories.

    python bench/student.py [--per-category 20] [--shots 3] [--seed 0] [--no-transformers]

Measures, in one run:
* AST accuracy per category and overall, zero-shot and with N random few-shot
  examples (drawn from other items of the same category), with Wilson 95% CIs;
* seconds per task per category;
* generation speed of the same model in llama.cpp (Q4_K_M) and in transformers
  (de-quantised from the same GGUF, float32 on CPU), same prompt, same
  greedy decoding; the ratio is the figure.

Prints tables and writes bench/results/student.json.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from flywheel.evaluate.ast_check import check_calls
from flywheel.evaluate.offline import wilson_interval
from flywheel.models.base import ChatRequest, FewShot
from flywheel.models.local import LocalModel, build_prompt, student_model_path
from flywheel.workloads.bfcl import load_bfcl

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = ["simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance"]


def accuracy_runs(model: LocalModel, per_category: int, shots: int, seed: int) -> dict:
    results: dict = {"zero_shot": {}, f"{shots}_shot": {}}
    for category in CATEGORIES:
        everything = load_bfcl([category], seed=seed)
        rng = random.Random(f"{seed}:{category}")
        rng.shuffle(everything)
        evaluated, pool = everything[:per_category], everything[per_category:]
        for mode, n_shots in (("zero_shot", 0), (f"{shots}_shot", shots)):
            correct, seconds, tokens = 0, 0.0, 0
            for item in evaluated:
                examples = (
                    [FewShot(e.question, e.reference_calls(), e.tools) for e in rng.sample(pool, n_shots)]
                    if n_shots
                    else []
                )
                result = model.complete(
                    ChatRequest(messages=item.messages, tools=item.tools, few_shot=examples, max_tokens=192)
                )
                correct += check_calls(result.calls, item.expected, item.functions).correct
                seconds += result.seconds
                tokens += result.output_tokens
            results[mode][category] = {
                "correct": correct,
                "n": len(evaluated),
                "accuracy": correct / len(evaluated),
                "ci95": wilson_interval(correct, len(evaluated)),
                "seconds_per_task": seconds / len(evaluated),
                "output_tokens_per_task": tokens / len(evaluated),
            }
            print(
                f"  {mode:<8} {category:<18} {correct:>3}/{len(evaluated)}  "
                f"{seconds / len(evaluated):.2f} s/task",
                file=sys.stderr,
            )
    for mode in list(results):
        total = sum(r["correct"] for r in results[mode].values())
        n = sum(r["n"] for r in results[mode].values())
        results[mode]["overall"] = {
            "correct": total,
            "n": n,
            "accuracy": total / n,
            "ci95": wilson_interval(total, n),
        }
    return results


SPEED_PROMPT = build_prompt(
    ChatRequest(
        messages=[
            {
                "role": "user",
                "content": "Find the area of a triangle with a base of 10 units and height of 5 units.",
            }
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "calculate_triangle_area",
                    "description": "Area of a triangle.",
                    "parameters": {
                        "type": "object",
                        "properties": {"base": {"type": "integer"}, "height": {"type": "integer"}},
                    },
                },
            }
        ],
    )
)


def llama_speed(model: LocalModel, tokens: int) -> dict:
    llama = model.llama
    llama.create_completion(SPEED_PROMPT, max_tokens=8, temperature=0.0, top_k=1)  # warm
    started = time.perf_counter()
    out = llama.create_completion(SPEED_PROMPT, max_tokens=tokens, temperature=0.0, top_k=1, stop=[])
    seconds = time.perf_counter() - started
    n = out["usage"]["completion_tokens"]
    return {
        "tokens": n,
        "seconds": seconds,
        "tokens_per_s": n / seconds,
        "prompt_tokens": out["usage"]["prompt_tokens"],
    }


def transformers_speed(tokens: int) -> dict:
    """Same model, de-quantised from the same GGUF, in transformers on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = student_model_path()
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    load_seconds = time.perf_counter() - started
    inputs = tokenizer(SPEED_PROMPT, return_tensors="pt")
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=4, do_sample=False)  # warm
        started = time.perf_counter()
        output = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        seconds = time.perf_counter() - started
    n = output.shape[1] - inputs["input_ids"].shape[1]
    return {
        "tokens": int(n),
        "seconds": seconds,
        "tokens_per_s": n / seconds,
        "load_seconds": load_seconds,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-category", type=int, default=20)
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed-tokens", type=int, default=64)
    parser.add_argument("--no-transformers", action="store_true")
    args = parser.parse_args()
    model = LocalModel()
    result: dict = {
        "model": model.name,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "per_category": args.per_category,
        "seed": args.seed,
    }
    result["speed_llama_cpp"] = llama_speed(model, args.speed_tokens)
    if not args.no_transformers:
        result["speed_transformers"] = transformers_speed(args.speed_tokens)
        result["speed_ratio"] = (
            result["speed_llama_cpp"]["tokens_per_s"] / result["speed_transformers"]["tokens_per_s"]
        )
    result["accuracy"] = accuracy_runs(model, args.per_category, args.shots, args.seed)

    modes = list(result["accuracy"])
    print(f"{'category':<19}" + "".join(f"{m:>26}" for m in modes) + f"{'s/task (' + modes[1] + ')':>22}")
    for category in [*CATEGORIES, "overall"]:
        cells = []
        for mode in modes:
            r = result["accuracy"][mode][category]
            cells.append(f"{r['accuracy']:>8.1%} [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}]")
        seconds = result["accuracy"][modes[1]][category].get("seconds_per_task")
        print(
            f"{category:<19}" + "".join(f"{c:>26}" for c in cells) + (f"{seconds:>22.2f}" if seconds else "")
        )
    print()
    speed = result["speed_llama_cpp"]
    line = f"llama.cpp {speed['tokens_per_s']:.1f} tokens/s"
    if "speed_transformers" in result:
        other = result["speed_transformers"]["tokens_per_s"]
        line += f"; transformers {other:.1f} tokens/s; ratio {result['speed_ratio']:.1f}x"
    print(line)
    out = ROOT / "bench" / "results" / "student.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"JSON in {out}")


if __name__ == "__main__":
    main()
