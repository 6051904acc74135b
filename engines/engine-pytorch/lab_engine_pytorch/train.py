"""The LoRA training-step scenario (lab-protocol's `train` module) with PyTorch eager autograd.

The loaded model's weights are frozen; each target projection of every layer (`q_proj`,
`v_proj`) is wrapped so that it computes `W·x + (alpha / rank)·B·(A·x)`, with `A` from the lab's
seeded `fill` (the same values every framework starts from) and `B` zero. `torch.optim.AdamW`
updates the adapters. Each step is timed in three phases (forward to the loss, backward,
optimizer step and zeroing), each after a device synchronize. The wrappers are removed at the
end, so the scenarios after this one see the model as loaded.
"""

import math
import time

from .micro import checksum, fill, weight_scale


def adapter_stream(layer, target):
    """lab_protocol::train::adapter_stream."""
    return 1000 + layer * 16 + target


def run_lora(engine, scenario, log, peak_start, peak_finish):
    torch = engine.torch
    lora = scenario["lora"]
    out = {"id": scenario["id"], "kind": "lora_step", "prompts": [], "error": None}
    model = engine.model
    layers = model.model.layers
    rank, scale = lora["rank"], lora["alpha"] / lora["rank"]
    dev = engine.device

    class LoraLinear(torch.nn.Module):
        def __init__(self, base, a, b):
            super().__init__()
            self.base, self.a, self.b = base, a, b

        def forward(self, x):
            return self.base(x) + (x @ self.a.t() @ self.b.t()) * scale

    saved = []
    steps, first_grads, params = [], [], []
    reset = peak_start()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for p in model.parameters():
                p.requires_grad_(False)
            adapters = []
            for li, layer in enumerate(layers):
                attn = layer.self_attn
                for ti, name in enumerate(lora["targets"]):
                    base = getattr(attn, name, None)
                    if base is None:
                        raise ValueError(f"lora.targets: layer {li} has no projection `{name}`")
                    n_out, n_in = base.weight.shape
                    a = fill(lora["seed"], adapter_stream(li, ti), rank * n_in, weight_scale(n_in))
                    a = torch.nn.Parameter(
                        torch.from_numpy(a.reshape(rank, n_in)).to(device=dev, dtype=base.weight.dtype)
                    )
                    b = torch.nn.Parameter(torch.zeros(n_out, rank, device=dev, dtype=base.weight.dtype))
                    saved.append((attn, name, base))
                    setattr(attn, name, LoraLinear(base, a, b))
                    adapters.append((li, name, a, b))
            params = [p for (_, _, a, b) in adapters for p in (a, b)]
            opt = torch.optim.AdamW(
                params,
                lr=lora["lr"],
                betas=(lora["beta1"], lora["beta2"]),
                eps=lora["eps"],
                weight_decay=lora["weight_decay"],
            )
            ids = torch.tensor([lora["token_ids"]], dtype=torch.long, device=dev)
            inputs, labels = ids[:, :-1], ids[0, 1:]
            total = scenario["warmup_iterations"] + scenario["iterations"]
            for k in range(total):
                engine.synchronize()
                t0 = time.perf_counter_ns()
                logits = model(input_ids=inputs, use_cache=False).logits[0]
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
                engine.synchronize()
                t1 = time.perf_counter_ns()
                loss.backward()
                engine.synchronize()
                t2 = time.perf_counter_ns()
                if k == 0:
                    for li, name, a, b in adapters:
                        for m, p in (("a", a), ("b", b)):
                            g = p.grad.float().cpu().numpy().reshape(-1)
                            first_grads.append({"layer": li, "target": name, "matrix": m, "checksum": checksum(g)})
                opt.step()
                opt.zero_grad(set_to_none=True)
                engine.synchronize()
                t3 = time.perf_counter_ns()
                if not math.isfinite(float(loss.detach())):
                    raise ValueError(f"step {k + 1}: the loss is {float(loss.detach())}")
                steps.append(
                    {
                        "warmup": k < scenario["warmup_iterations"],
                        "forward_ns": t1 - t0,
                        "backward_ns": t2 - t1,
                        "optimizer_ns": t3 - t2,
                        "loss": float(loss.detach()),
                    }
                )
                log(
                    f"progress: {scenario['id']} step {k + 1}/{total} loss {steps[-1]['loss']:.4f} "
                    f"(forward {(t1 - t0) / 1e6:.0f} ms, backward {(t2 - t1) / 1e6:.0f} ms, optimizer {(t3 - t2) / 1e6:.0f} ms)"
                )
    except Exception as e:  # noqa: BLE001 - the scenario fails, the steps measured are kept
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        for attn, name, base in saved:
            setattr(attn, name, base)
    out["train"] = {
        "steps": steps,
        "first_grads": first_grads,
        "positions": len(lora["token_ids"]) - 1,
        "trainable_params": int(sum(p.numel() for p in params)),
        "peak_rss_bytes": peak_finish(reset),
        "how": "torch eager autograd; LoRA as a wrapper of each target nn.Linear; torch.optim.AdamW (default foreach)",
    }
    return out



def invalid_lora(lora):
    """lab_protocol::train::invalid."""

    def positive(x):
        return math.isfinite(x) and x > 0

    if lora["rank"] < 1:
        return "lora.rank must be at least 1"
    if not (positive(lora["alpha"]) and positive(lora["lr"]) and positive(lora["eps"])):
        return (
            f"lora.alpha, lora.lr and lora.eps must be positive numbers, not "
            f"{lora['alpha']}, {lora['lr']}, {lora['eps']}"
        )
    if not (math.isfinite(lora["weight_decay"]) and lora["weight_decay"] >= 0):
        return f"lora.weight_decay must be 0 or more, not {lora['weight_decay']}"
    if not all(0 <= b < 1 for b in (lora["beta1"], lora["beta2"])):
        return f"lora.beta1 and lora.beta2 must lie in [0, 1), not {lora['beta1']} and {lora['beta2']}"
    if not lora["targets"]:
        return "lora.targets is empty"
    for i, t in enumerate(lora["targets"]):
        if t in lora["targets"][:i]:
            return f"lora.targets: `{t}` appears twice"
    if len(lora["token_ids"]) < 2:
        return (
            f"lora.token_ids has {len(lora['token_ids'])} ids; a training sequence needs at least 2 "
            "(inputs and the next token)"
        )
    return None


def invalid_lora_scenario(s):
    """engine-kit's `validate_lora`."""
    lora = s.get("lora")
    if s["kind"] == "lora_step":
        if lora is None:
            return "a LoRA scenario needs `lora` settings"
        return invalid_lora(lora)
    if lora is not None:
        return f"`lora` does not fit a {s['kind']} scenario"
    return None
