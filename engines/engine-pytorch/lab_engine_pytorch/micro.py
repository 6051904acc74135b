"""The microbenchmark scenario: a port of engine-kit's `micro.rs` with PyTorch (eager) ops.

Inputs are lab-protocol's `micro::fill` (SplitMix64 per element, top 24 bits to [-1, 1), times a
scale) computed with numpy, so every framework times the same values and the outputs' checksums
can be compared. Ops are what transformers' Llama runs: `F.linear`, `torch.softmax`,
`LlamaRMSNorm`, `rotate_half` RoPE, eager attention (softmax in float32, as
`eager_attention_forward`); components are layer 0 of the loaded model (`LlamaDecoderLayer`, its
`self_attn` and `mlp`, a copy in the case's dtype when it differs), with a cache object that
appends to fixed past keys/values without growing. Each call ends with a device synchronize; on
CUDA, events around the call give its device time too.
"""

import copy
import time

import numpy as np

MASK64 = (1 << 64) - 1
STREAM_X, STREAM_W, STREAM_V, STREAM_IDS = 1, 2, 3, 4
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def fill(seed, stream, n, scale):
    """lab_protocol::micro::fill, vectorised."""
    base = np.uint64((seed + (stream << 32)) & MASK64)
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = base + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    v = (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 / 16777216.0) - np.float32(1.0)
    return v * np.float32(scale)


def weight_scale(k):
    return np.float32(1.0) / np.sqrt(np.float32(k))


def token_ids(seed, tokens, vocab):
    v = fill(seed, STREAM_IDS, tokens, 1.0).astype(np.float64)
    return np.minimum(((v + 1.0) / 2.0 * vocab).astype(np.uint32), vocab - 1)


def invalid_op(op, model):
    """lab_protocol::micro::Op::invalid."""
    kind = op.get("op")
    dims = {
        "matmul": ("m", "k", "n"),
        "softmax": ("rows", "cols"),
        "rms_norm": ("rows", "dim"),
        "rope": ("tokens", "heads", "head_dim"),
        "attention": ("tokens", "heads", "kv_heads", "head_dim"),
        "embedding": ("tokens",),
        "attention_block": ("tokens",),
        "mlp_block": ("tokens",),
        "layer": ("tokens",),
    }.get(kind)
    if dims is None:
        return f"unknown op `{kind}`"
    bad = any(op[d] == 0 for d in dims)
    bad |= kind == "rope" and op["head_dim"] % 2 == 1
    bad |= kind == "attention" and op["kv_heads"] > 0 and op["heads"] % op["kv_heads"] != 0
    if bad:
        return f"{kind}: a zero or mismatched dimension"
    m = model
    if kind in ("embedding", "attention_block", "mlp_block", "layer") and (
        0 in (m["hidden"], m["heads"], m["kv_heads"], m["vocab"], m["intermediate"])
        or m["heads"] % m["kv_heads"] != 0
        or m["head_dim"] * m["heads"] != m["hidden"]
    ):
        return f"micro.model {m}: inconsistent dimensions"
    return None


def invalid_micro(s):
    """engine-kit's `validate_micro`: why the scenario's micro settings cannot run, or None."""
    m = s.get("micro")
    if s["kind"] == "micro":
        if m is None:
            return "a micro scenario needs `micro` settings"
        if not m["cases"]:
            return "micro.cases is empty"
        seen = set()
        for c in m["cases"]:
            if c["id"] in seen:
                return f"micro.cases: the id `{c['id']}` appears twice"
            seen.add(c["id"])
            why = invalid_op(c["op"], m["model"])
            if why:
                return f"micro.cases `{c['id']}`: {why}"
    elif m is not None:
        return f"`micro` does not fit a {s['kind']} scenario"
    return None


class Unsupported(Exception):
    pass


class FixedCache:
    """A stand-in for transformers' Cache at a fixed past: `update` returns the past keys/values
    with the new ones appended (torch.cat, as DynamicCache does) and keeps nothing."""

    def __init__(self, torch, k, v):
        self.torch, self.k, self.v = torch, k, v

    def update(self, k, v, layer_idx, *args, **kwargs):
        return self.torch.cat([self.k, k], dim=-2), self.torch.cat([self.v, v], dim=-2)


def run_micro(engine, scenario, log):
    torch = engine.torch
    micro = scenario["micro"]
    out = {"id": scenario["id"], "kind": "micro", "prompts": [], "error": None, "micro": micro, "ops": []}
    budget_ns = scenario.get("max_duration_ms")
    budget_ns = None if budget_ns is None else budget_ns * 1_000_000
    cases = micro["cases"]
    for n, case in enumerate(cases, 1):
        r = {"id": case["id"], "host_ns": []}
        try:
            run, note = prepare(engine, case, micro)
            if note:
                r["note"] = note
            first = run(True)
        except Exception as e:  # noqa: BLE001 - the framework cannot run it: recorded, next case
            r["unsupported"] = first_line(f"{type(e).__name__}: {e}")
            what = f"unsupported: {r['unsupported']}"
        else:
            r["checksum"] = checksum(first)
            device = []
            try:
                for _ in range(scenario["warmup_iterations"]):
                    run(False)
                start = time.perf_counter_ns()
                while len(r["host_ns"]) < scenario["iterations"]:
                    t = time.perf_counter_ns()
                    d = run(False)
                    r["host_ns"].append(time.perf_counter_ns() - t)
                    if d is not None:
                        device.append(d)
                    if budget_ns is not None and time.perf_counter_ns() - start >= budget_ns:
                        break
            except Exception as e:  # noqa: BLE001 - a failed call ends this case only
                r["error"] = first_line(f"{type(e).__name__}: {e}")
            if device:
                r["device_ns"] = device
            s = sorted(r["host_ns"])
            what = f"{len(s)} samples, median {s[len(s) // 2] / 1e3:.1f} µs" if s else r.get("error")
        log(f"micro {n}/{len(cases)} {case['id']}: {what}")
        out["ops"].append(r)
    return out


def first_line(s):
    """engine-kit's `first_line`: a framework's message without what it appends."""
    lines = s.strip().splitlines()
    return lines[0].strip() if lines else ""


SAMPLE_ELEMENTS = 64  # lab_protocol::micro::SAMPLE_ELEMENTS


def checksum(values):
    """lab_protocol::micro::OpChecksum: sums over the output and its elements at `k·n / m`,
    `k < m = min(n, 64)` of the flattened (row-major) output."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    v = flat.astype(np.float64)
    n = int(v.size)
    m = min(n, SAMPLE_ELEMENTS)
    idx = (np.arange(m, dtype=np.int64) * n) // m if m else np.zeros(0, dtype=np.int64)
    out = {"sum": float(v.sum()), "sum_abs": float(np.abs(v).sum()), "elements": n}
    if m:
        out["sample"] = [float(x) for x in flat[idx]]
    return out


def prepare(engine, case, micro):
    """Returns (run, note): `run(want)` performs the op once, synchronizes, and returns its
    output as a float32 numpy array when `want`, else its CUDA-event time in ns (None on CPU)."""
    torch = engine.torch
    from transformers.models.llama.modeling_llama import LlamaRMSNorm, rotate_half

    if case["dtype"] not in DTYPES:
        raise Unsupported(f"{case['dtype']} is a weight format, not an arithmetic type")
    dt = getattr(torch, DTYPES[case["dtype"]])
    dev = engine.device
    seed, m, op = micro["seed"], micro["model"], case["op"]

    def t(stream, shape, scale=1.0):
        n = int(np.prod(shape))
        return torch.from_numpy(fill(seed, stream, n, scale).reshape(shape)).to(device=dev, dtype=dt)

    def heads_first(stream, n, heads, hd):
        return t(stream, (1, n, heads, hd)).transpose(1, 2).contiguous()

    def causal(n, past):
        if n == 1:
            return None
        i = torch.arange(n, device=dev).view(n, 1) + past
        j = torch.arange(past + n, device=dev).view(1, past + n)
        mask = torch.zeros(n, past + n, dtype=dt, device=dev)
        return mask.masked_fill(j > i, torch.finfo(dt).min).view(1, 1, n, past + n)

    def rope_tables(hd, start, n):
        inv = 1.0 / (m["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        pos = torch.arange(start, start + n, dtype=torch.float32)
        f = pos[:, None] * inv[None, :]
        emb = torch.cat([f, f], dim=-1)
        return emb.cos().to(device=dev, dtype=dt), emb.sin().to(device=dev, dtype=dt)

    def attend(q, k, v, mask):
        rep = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        w = torch.matmul(q, k.transpose(2, 3)) * (q.shape[-1] ** -0.5)
        if mask is not None:
            w = w + mask
        w = torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        return torch.matmul(w, v)

    note = None
    kind = op["op"]
    if kind == "matmul":
        x = t(STREAM_X, (op["m"], op["k"]))
        w = t(STREAM_W, (op["n"], op["k"]), weight_scale(op["k"]))
        body = lambda: torch.nn.functional.linear(x, w)  # noqa: E731
    elif kind == "softmax":
        x = t(STREAM_X, (op["rows"], op["cols"]))
        body = lambda: torch.softmax(x, dim=-1)  # noqa: E731
    elif kind == "rms_norm":
        x = t(STREAM_X, (op["rows"], op["dim"]))
        norm = LlamaRMSNorm(op["dim"], eps=m["rms_eps"]).to(device=dev, dtype=dt)
        norm.weight.data.copy_(t(STREAM_W, (op["dim"],)))
        body = lambda: norm(x)  # noqa: E731
        note = "LlamaRMSNorm: variance in float32" if dt != torch.float32 else None
    elif kind == "rope":
        x = heads_first(STREAM_X, op["tokens"], op["heads"], op["head_dim"])
        cos, sin = rope_tables(op["head_dim"], 0, op["tokens"])
        body = lambda: x * cos + rotate_half(x) * sin  # noqa: E731
    elif kind == "attention":
        tk, p, hd = op["tokens"], op["past"], op["head_dim"]
        q = heads_first(STREAM_X, tk, op["heads"], hd)
        k = heads_first(STREAM_W, p + tk, op["kv_heads"], hd)
        v = heads_first(STREAM_V, p + tk, op["kv_heads"], hd)
        mask = causal(tk, p)
        body = lambda: attend(q, k, v, mask)  # noqa: E731
        note = "softmax in float32 (as transformers' eager attention)" if dt != torch.float32 else None
    elif kind in ("embedding", "attention_block", "mlp_block", "layer"):
        model = engine.model.model
        layer = model.layers[0]
        if layer.self_attn.q_proj.weight.dtype != dt:
            layer = copy.deepcopy(layer).to(dtype=dt)
        if kind == "embedding":
            emb = model.embed_tokens
            if emb.weight.dtype != dt:
                emb = copy.deepcopy(emb).to(dtype=dt)
            ids = torch.from_numpy(token_ids(seed, op["tokens"], m["vocab"]).astype(np.int64)).to(dev)
            ids = ids.view(1, -1)
            body = lambda: emb(ids)  # noqa: E731
        elif kind == "mlp_block":
            x = t(STREAM_X, (1, op["tokens"], m["hidden"]))
            body = lambda: x + layer.mlp(layer.post_attention_layernorm(x))  # noqa: E731
        else:
            tk, p = op["tokens"], op["past"]
            x = t(STREAM_X, (1, tk, m["hidden"]))
            cos, sin = model.rotary_emb(x, torch.arange(p, p + tk, device=dev).view(1, -1))
            mask = causal(tk, p)
            hd, kvh = m["head_dim"], m["kv_heads"]
            cache = (
                FixedCache(torch, heads_first(STREAM_W, p, kvh, hd), heads_first(STREAM_V, p, kvh, hd))
                if p > 0
                else None
            )

            def attention_block():
                h, _ = layer.self_attn(
                    hidden_states=layer.input_layernorm(x),
                    position_embeddings=(cos, sin),
                    attention_mask=mask,
                    past_key_values=cache,
                )
                return x + h

            if kind == "attention_block":
                body = attention_block
            else:

                def body():
                    y = attention_block()
                    return y + layer.mlp(layer.post_attention_layernorm(y))

        if dt != torch.float32 and kind != "embedding":
            note = "softmax and RMSNorm variance in float32 (as transformers' Llama)"
    else:
        raise Unsupported(f"unknown op `{kind}`")

    cuda = engine.cuda

    def run(want):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            y = body()
            end.record()
            torch.cuda.synchronize(dev)
            device_ns = int(start.elapsed_time(end) * 1e6)
        else:
            y = body()
            device_ns = None
        if want:
            return y.float().cpu().numpy().reshape(-1)
        return device_ns

    return run, note
