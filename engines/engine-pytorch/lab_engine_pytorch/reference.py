"""The correctness reference, from a path the lab did not write.

transformers loads the *original GGUF* (`gguf_file=`; the `gguf` package dequantizes it), not the
lab's GGUF -> safetensors conversion. For each prompt (token ids given by the caller, so every
engine sees the same ids) it computes, with full-sequence forward passes and no KV cache:

- `greedy`: a greedy continuation of `continuation_tokens` tokens (argmax, ties to the lowest id,
  EOS does not stop it: the lab's fixed-length semantics);
- `teacher_forced`: one forward pass over prompt + greedy[:-1]; for every continuation position
  the top-5 token ids and their float32 logits.

Input (stdin): {"model_dir", "gguf_file", "continuation_tokens", "prompts": [{"name", "token_ids"}]}.
Output (stdout): the reference JSON (see `crates/lab-results/src/correctness.rs`).
"""

import importlib.metadata
import json
import os
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

TOP_K = 5


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def top_k(row):
    import torch

    vals, idx = torch.topk(row.float(), k=TOP_K * 4)
    pairs = sorted(zip(vals.tolist(), idx.tolist()), key=lambda t: (-t[0], t[1]))[:TOP_K]
    return {"ids": [int(i) for _, i in pairs], "logits": [float(v) for v, _ in pairs]}


def main():
    spec = json.loads(sys.stdin.read())
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    path = os.path.join(spec["model_dir"], spec["gguf_file"])
    if not os.path.isfile(path):
        log(f"error: {path} is missing (run `cargo xtask models`)")
        sys.exit(1)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    t = time.time()
    model = AutoModelForCausalLM.from_pretrained(
        spec["model_dir"],
        gguf_file=spec["gguf_file"],
        dtype=torch.float32,
        local_files_only=True,
        attn_implementation="eager",
    )
    model.eval()
    log(f"loaded {path} through transformers' GGUF loader in {time.time() - t:.1f} s")
    n = spec["continuation_tokens"]
    out = []
    with torch.inference_mode():
        for p in spec["prompts"]:
            ids = list(p["token_ids"])
            seq = list(ids)
            for _ in range(n):
                logits = model(torch.tensor([seq])).logits[0, -1]
                seq.append(int(torch.argmax(logits)))
            greedy = seq[len(ids):]
            full = model(torch.tensor([seq[:-1]])).logits[0, len(ids) - 1:]
            forced = [top_k(row) for row in full]
            agree = sum(1 for f, g in zip(forced, greedy) if f["ids"][0] == g)
            log(f"reference: {p['name']} ({len(ids)} tokens): {n} greedy tokens, "
                f"teacher-forced top-1 equals greedy at {agree}/{n}")
            out.append({
                "name": p["name"],
                "token_ids": ids,
                "greedy": greedy,
                "teacher_forced": forced,
            })
    result = {
        "generator": {
            "path": "transformers AutoModelForCausalLM.from_pretrained(gguf_file=...), float32, eager attention, full-sequence forward passes without KV cache",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gguf": importlib.metadata.version("gguf"),
            "python": sys.version.split()[0],
            "device": "cpu",
        },
        "continuation_tokens": n,
        "top_k": TOP_K,
        "prompts": out,
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
