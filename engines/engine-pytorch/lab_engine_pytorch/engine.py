"""The PyTorch eager baseline engine: Hugging Face transformers as a typical deployment runs it.

It speaks the lab's protocol exactly like the Rust engine kit (crates/engine-kit): one request
JSON on stdin, one report JSON on stdout, logs and progress on stderr. The measurement loop is a
line-by-line port of the kit's `run_scenario` (same warm-up, iteration count, fixed length,
greedy argmax with ties to the lowest id, the kit's SplitMix64 top-p sampler, a device sync
before every timestamp), so that the only difference between this engine and a Rust one is the
model code.

Loading: `LlamaForCausalLM.from_pretrained` on the model volume's HF directory, safetensors only
(`use_safetensors=True`, never a pickle), local files only, offline flags set before
transformers is imported, eager attention, no `torch.compile`.
"""

import json
import math
import os
import sys
import time
import traceback

from . import micro, train

# Never reach the network: set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCHEMA_VERSION = 6
SAMPLED_IDS_KEPT = 64
ENGINE_NAME = "pytorch"
ENGINE_VERSION = "0.1.0"
TOP_K = 5
PROCESS_START_NS = time.perf_counter_ns()
PROCESS_START_UNIX_NS = time.time_ns()
# The cold-start breakdown (engine-kit's `phase` module): phase name -> perf_counter_ns, and the
# process's first token.
def slowdown_from_env():
    """`LAB_SLOWDOWN` (set by `bench --slowdown S`): the gate study's injected regression, every
    forward pass stretched by the share S of its own duration (0 <= S <= 1). Anything else is an
    error, never ignored."""
    text = os.environ.get("LAB_SLOWDOWN", "")
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise SystemExit(f"LAB_SLOWDOWN={text!r}: expected a share between 0 and 1 (0.1 = 10 % slower steps)")
    return value


SLOWDOWN = slowdown_from_env()


def stretch(started_ns):
    """Spins until the step that started at `started_ns` took (1 + SLOWDOWN) times as long (the
    kit's `slowdown::stretch`, ported)."""
    if SLOWDOWN > 0.0:
        now = time.perf_counter_ns()
        until = now + int((now - started_ns) * SLOWDOWN)
        while time.perf_counter_ns() < until:
            pass


PHASES = {}
FIRST_TOKEN_NS = [None]


def phase(name):
    PHASES.setdefault(name, time.perf_counter_ns())


def first_token(at_ns):
    if FIRST_TOKEN_NS[0] is None:
        FIRST_TOKEN_NS[0] = at_ns


class EngineError(Exception):
    """An error with a message meant for the report."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def current_hwm():
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# The largest VmHWM seen before a per-level reset (engine-kit's `PeakRss`).
_PEAK_SEEN = [0]


def peak_rss_bytes():
    """The process's peak RSS across the per-level resets."""
    now = current_hwm()
    return None if now is None else max(now, _PEAK_SEEN[0])


def peak_rss_start():
    """Resets VmHWM for one span; returns whether the reset worked."""
    now = current_hwm()
    if now is not None:
        _PEAK_SEEN[0] = max(_PEAK_SEEN[0], now)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_finish(reset):
    now = current_hwm()
    if now is None:
        return None
    _PEAK_SEEN[0] = max(_PEAK_SEEN[0], now)
    return now if reset else None


# ---------------------------------------------------------------------------------------------
# Request validation (the same rules as engine-kit's `parse_request`).

def parse_request(text):
    try:
        req = json.loads(text)
    except json.JSONDecodeError as e:
        raise EngineError(f"malformed request JSON on stdin: {e}") from None
    if not isinstance(req, dict):
        raise EngineError("malformed request JSON on stdin: expected an object")
    got = req.get("schema_version")
    if got != SCHEMA_VERSION:
        raise EngineError(f"request schema_version is {got}, this engine speaks {SCHEMA_VERSION}")
    for key in ("model", "device", "scenarios"):
        if key not in req:
            raise EngineError(f"malformed request JSON on stdin: missing field `{key}`")
    for s in req["scenarios"]:
        sid = s.get("id", "?")
        if s["iterations"] < 1:
            raise EngineError(f"scenario `{sid}`: iterations must be at least 1")
        max_ms = s.get("max_duration_ms")
        if max_ms is not None and max_ms < 1:
            raise EngineError(f"scenario `{sid}`: max_duration_ms must be at least 1 (or absent)")
        if max_ms is not None and max_ms < s.get("min_duration_ms", 0):
            raise EngineError(f"scenario `{sid}`: min_duration_ms is larger than max_duration_ms")
        if s["generation"]["max_new_tokens"] < 1:
            raise EngineError(f"scenario `{sid}`: generation.max_new_tokens must be at least 1")
        check_load(s)
        gen = s["generation"]
        if not gen.get("kv_cache", True) and s["kind"] in LOAD_KINDS:
            raise EngineError(
                f"scenario `{sid}`: generation.kv_cache off is for one sequence at a time; load scenarios keep the cache"
            )
        why = invalid_sampling(gen["sampling"])
        if why:
            raise EngineError(f"scenario `{sid}`: generation.sampling: {why}")
        overhead = s.get("sampling_overhead")
        if s["kind"] == "sampling_overhead":
            if overhead is None:
                raise EngineError(f"scenario `{sid}`: a sampling-overhead scenario needs `sampling_overhead` settings")
            if not overhead["strategies"] or overhead["samples"] < 1:
                raise EngineError(
                    f"scenario `{sid}`: sampling_overhead needs one or more strategies and samples of at least 1"
                )
            for x in overhead["strategies"]:
                why = invalid_sampling(x)
                if why:
                    raise EngineError(f"scenario `{sid}`: sampling_overhead.strategies: {why}")
        elif overhead is not None:
            raise EngineError(f"scenario `{sid}`: `sampling_overhead` does not fit a {s['kind']} scenario")
        why = micro.invalid_micro(s) or train.invalid_lora_scenario(s)
        if why:
            raise EngineError(f"scenario `{sid}`: {why}")
        for p in s["prompts"]:
            if not p["token_ids"]:
                raise EngineError(f"scenario `{sid}`: prompt `{p['name']}` has no tokens")
            if s["kind"] == "teacher_forced":
                forced = p.get("forced_token_ids", [])
                if len(forced) + 1 != s["generation"]["max_new_tokens"]:
                    raise EngineError(
                        f"scenario `{sid}`: prompt `{p['name']}` has {len(forced)} forced tokens; "
                        "a teacher-forced scenario needs generation.max_new_tokens = forced + 1"
                    )
    return req


def check_load(s):
    """engine-kit's `validate_load`: load settings fit the kind and can run."""
    sid, load = s.get("id", "?"), s.get("load")
    is_load = s["kind"] in ("batched_throughput", "concurrent_load")
    if is_load and load is None:
        raise EngineError(f"scenario `{sid}`: a load scenario needs `load` settings")
    if not is_load:
        if load is not None:
            raise EngineError(f"scenario `{sid}`: `load` does not fit a {s['kind']} scenario")
        return
    if not s["prompts"]:
        raise EngineError(f"scenario `{sid}`: a load scenario needs prompts")
    if s["kind"] == "batched_throughput":
        if load.get("kind") != "batches":
            raise EngineError(f"scenario `{sid}`: `load` does not fit a batched_throughput scenario")
    elif load.get("kind") != "concurrent":
        raise EngineError(f"scenario `{sid}`: `load` does not fit a concurrent_load scenario")
    why = invalid_load(load)
    if why is not None:
        raise EngineError(f"scenario `{sid}`: load.{why}")
    if s["kind"] == "batched_throughput" and len({len(p["token_ids"]) for p in s["prompts"]}) != 1:
        raise EngineError(f"scenario `{sid}`: static batches need prompts of equal length")


def invalid_load(load):
    """lab_protocol's `Load::invalid`: why these load settings cannot run, naming the field."""
    if load["kind"] == "batches":
        if not load["batch_sizes"] or 0 in load["batch_sizes"]:
            return "batch_sizes must be one or more sizes of at least 1"
        return None
    if not load["concurrency"] or 0 in load["concurrency"]:
        return "concurrency must be one or more levels of at least 1"
    if load["requests"] < 1:
        return "requests must be at least 1"
    if load["max_batch"] < 1:
        return "max_batch must be at least 1"
    a = load["arrival"]
    if a["kind"] == "poisson" and not (math.isfinite(a["rate_per_s"]) and a["rate_per_s"] > 0):
        return f"arrival.rate_per_s must be a positive number, not {a['rate_per_s']}"
    return None


# ---------------------------------------------------------------------------------------------
# Sampling: a port of engine-kit's sampling.rs (SplitMix64, same order, same float widths, the
# same f64 sums in the same order: numpy's cumsum is sequential). A test in lab-testkit draws
# with both on the same logits and compares the ids.


def invalid_sampling(sampling):
    """lab_protocol's `Sampling::invalid` (the vocabulary is not known here)."""
    if sampling.get("kind") != "top_p":
        return None
    t, p, k = sampling["temperature"], sampling["top_p"], sampling.get("top_k")
    if not (math.isfinite(t) and t > 0):
        return f"temperature must be a number above 0, not {t} (greedy decoding is `greedy`)"
    if not (0 < p <= 1):
        return f"top_p must be in (0, 1], not {p}"
    if k is not None and k < 1:
        return "top_k must be at least 1"
    return None


MASK64 = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def _f32(bits):
    import numpy as np

    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


# The kit's `lab_exp` constants (engine-kit's sampling.rs), as bits.
EXP_BITS = {
    "log2e": 0x3FB8AA3B,
    "c1": 0x3F318000,
    "c2": 0xB95E8083,
    "p": (0x39506967, 0x3AB743CE, 0x3C088908, 0x3D2AA9C1, 0x3E2AAAAA, 0x3F000000),
}
BLOCK = 64


def lab_exp(x):
    """The kit's `lab_exp` over a float32 array: the same IEEE operations in the same order."""
    import numpy as np

    f = np.float32
    valid = x >= f(-87.0)
    xs = np.where(valid, x, f(0.0)).astype(np.float32)
    n = np.floor(xs * _f32(EXP_BITS["log2e"]) + f(0.5))
    r = xs - n * _f32(EXP_BITS["c1"])
    r = r - n * _f32(EXP_BITS["c2"])
    z = r * r
    p = [_f32(b) for b in EXP_BITS["p"]]
    y = np.full_like(r, p[0])
    for c in p[1:]:
        y = y * r + c
    y = y * z + r + f(1.0)
    pow2 = ((n.astype(np.int32) + 127) << 23).astype(np.int32).view(np.float32)
    return np.where(valid, y * pow2, f(0.0)).astype(np.float32)


def probabilities(x, inv_t):
    """The kit's `probabilities`: p per token (zero-padded to whole blocks of 64) and the running
    sum of the block sums (lane j of a block adds its tokens 8i + j in order i, f64; lanes then
    ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)))."""
    import numpy as np

    v = len(x)
    nb = -(-v // BLOCK)
    m = np.fmax.reduce(x, initial=-np.inf).astype(np.float32)
    xp = np.full(nb * BLOCK, -np.inf, dtype=np.float32)
    xp[:v] = (x - m) * inv_t
    p = lab_exp(xp)
    lanes = np.cumsum(p.astype(np.float64).reshape(nb, 8, 8), axis=1)[:, -1, :]
    blocks = ((lanes[:, 0] + lanes[:, 1]) + (lanes[:, 2] + lanes[:, 3])) + (
        (lanes[:, 4] + lanes[:, 5]) + (lanes[:, 6] + lanes[:, 7])
    )
    return p, np.cumsum(blocks)


def draw_by_blocks(p, cum, target):
    """The kit's `draw_by_blocks`: the first token, in id order, where the running sum exceeds
    `target` (block sums first, then the tokens of the block reached)."""
    import numpy as np

    b = int(np.searchsorted(cum, target, side="right"))
    if b >= len(cum):
        return int(np.nonzero(p > 0)[0][-1])
    before = float(cum[b - 1]) if b > 0 else 0.0
    block = p[b * BLOCK : (b + 1) * BLOCK].astype(np.float64)
    acc = np.cumsum(np.concatenate(([before], block)))[1:]
    j = int(np.searchsorted(acc, target, side="right"))
    if j >= BLOCK:
        j = int(np.nonzero(block > 0)[0][-1])
    return b * BLOCK + j


class Sampler:
    """The kit's `Sampler` (engine-kit's sampling.rs), drawing the same ids from the same logits
    and seed. The kit finds a top-k's or a nucleus's candidates above thresholds; this port sorts
    every token, which gives the same result by the kit's definition."""

    def __init__(self, sampling):
        self.greedy = True
        if sampling.get("kind") == "top_p" and sampling["temperature"] > 0:
            import numpy as np

            self.np = np
            self.greedy = False
            self.inv_t = np.float32(1.0) / np.float32(sampling["temperature"])
            self.top_p = min(max(float(np.float32(sampling["top_p"])), 0.0), 1.0)
            k = sampling.get("top_k")
            self.top_k = None if k is None else max(int(k), 1)
            self.state = sampling["seed"] & MASK64

    def candidates(self, p, ids, total, k):
        """The kit's candidates: (p, ids) sorted (descending p, ascending id) over the tokens
        above the first threshold that holds `k` of them (a top-k) or the nucleus (a nucleus), else
        every token; a prefix of the full order either way."""
        np = self.np
        if k is not None:  # the kit's TOP_K_THRESHOLDS
            taus = [np.float32(2.0 ** -e) for e in (4, 8, 12, 16, 20, 24)]
        else:  # the kit's THRESHOLDS, then the bound that always holds the nucleus
            safe = np.float32((1.0 - self.top_p) * total / (2.0 * len(p)))
            taus = [np.float32(2.0 ** -e) for e in (4, 8, 12)] + [safe]

        def by_order(sel):
            q = p[sel]
            order = np.lexsort((sel, -q))  # descending p, ascending id
            return q[order], sel[order]

        for tau in taus:
            if tau <= 0:
                continue
            above = ids[p[ids] >= tau]
            if k is not None:
                if len(above) >= k:
                    return by_order(above)
                continue
            if float(p[above].astype(np.float64).sum()) < (self.top_p + 1e-6) * total:
                continue
            q, sel = by_order(above)
            if len(np.nonzero(np.cumsum(q.astype(np.float64) / total) >= self.top_p)[0]):
                return q, sel
        return by_order(ids)

    def sample(self, logits):
        """`logits` is a 1-D float32 torch tensor (on any device)."""
        import torch

        if self.greedy:
            # torch.argmax returns the first maximal index: ties go to the lowest id, as in the kit.
            # NaN handling differs from the kit only for NaN logits, which a valid model never has.
            return int(torch.argmax(logits).item())
        np = self.np
        self.state, r = splitmix64(self.state)
        u = (r >> 11) / float(1 << 53)
        x = logits.float().cpu().numpy()
        p, cum = probabilities(x, self.inv_t)
        ids = np.nonzero(p > 0)[0]
        if len(ids) == 0:
            return int(torch.argmax(logits).item())
        total = float(cum[-1])
        k = self.top_k if self.top_k is not None and self.top_k < len(ids) else None
        if k is None and self.top_p >= 1.0:
            return draw_by_blocks(p, cum, u * total)
        q, ids = self.candidates(p, ids, total, k)
        if k is not None:
            q, ids = q[:k], ids[:k]
            total = float(np.cumsum(q.astype(np.float64))[-1])  # descending order, as the kit
        q64 = q.astype(np.float64)
        if self.top_p >= 1.0:
            n = len(q)
        else:
            kept = np.cumsum(q64 / total)
            reached = np.nonzero(kept >= self.top_p)[0]
            n = int(reached[0]) + 1 if len(reached) else len(q)
        acc = np.cumsum(q64[:n])
        target = u * float(acc[-1])
        i = int(np.searchsorted(acc, target, side="right"))
        return int(ids[min(i, n - 1)])


def top_k(logits, k=TOP_K):
    """Top-k (ids, logits) of a 1-D tensor: descending logit, ascending id on ties."""
    import torch

    vals, idx = torch.topk(logits.float(), k=min(k * 4, logits.shape[-1]))
    pairs = sorted(zip(vals.tolist(), idx.tolist()), key=lambda t: (-t[0], t[1]))[:k]
    return {"ids": [int(i) for _, i in pairs], "logits": [float(v) for v, _ in pairs]}


# ---------------------------------------------------------------------------------------------
# The model.

DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


class TorchEngine:
    def __init__(self, request):
        import torch
        import transformers
        from transformers import LlamaForCausalLM

        self.torch = torch
        model = request["model"]
        if model["format"] != "safetensors":
            raise EngineError(
                f"engine-pytorch loads the HF safetensors directory only (format `{model['format']}` requested)"
            )
        if model["dtype"] not in DTYPES:
            raise EngineError(f"engine-pytorch: unsupported dtype `{model['dtype']}` (f32, bf16, f16)")
        d = model["dir"]
        for name in ("config.json", "model.safetensors"):
            path = os.path.join(d, name)
            if not os.path.isfile(path) or os.path.getsize(path) == 0:
                raise EngineError(
                    f"model file {path} is missing (engines never download; run `cargo xtask models`)"
                )

        dev = request["device"]
        if dev["kind"] == "cpu":
            self.device = torch.device("cpu")
            self.cuda = False
        else:
            if not torch.cuda.is_available():
                raise EngineError(f"device cuda:{dev['ordinal']} requested but torch sees no CUDA device")
            self.device = torch.device(f"cuda:{dev['ordinal']}")
            self.cuda = True
            torch.cuda.set_device(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

        threads = request.get("threads")
        if threads:
            torch.set_num_threads(int(threads))
        self.threads = torch.get_num_threads()
        phase("runtime_init")  # torch and transformers imported, device and threads set

        self.dtype_name = model["dtype"]
        dtype = getattr(torch, DTYPES[self.dtype_name])
        self.model = LlamaForCausalLM.from_pretrained(
            d,
            dtype=dtype,
            local_files_only=True,
            use_safetensors=True,
            attn_implementation="eager",
        ).to(self.device)
        phase("weights_loaded")  # from_pretrained opens, parses and loads in one call
        self.model.eval()
        self.cache = None
        # Padding id of the padded batches (masked out, so its value never matters): the
        # tokenizer's pad id when the config names one, else 0.
        pad = getattr(self.model.config, "pad_token_id", None)
        self.pad_id = int(pad) if isinstance(pad, int) else 0
        self.identity_ = {
            "name": ENGINE_NAME,
            "version": ENGINE_VERSION,
            "backend": f"torch {torch.__version__} + transformers {transformers.__version__}",
            "device": "cpu" if not self.cuda else f"cuda:{dev['ordinal']}",
            "dtype": self.dtype_name,
            "weight_format": "safetensors",
            "threads": self.threads,
            "settings": {
                "attn_implementation": "eager",
                "torch_compile": "off",
                "kv_cache": "transformers DynamicCache",
                "grad": "torch.inference_mode",
                "interop_threads": str(torch.get_num_interop_threads()),
                "mkldnn": str(torch.backends.mkldnn.is_available()).lower(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "logits": "float32 copy of the last position",
                "batching": f"S2: {PADDED}; S3: {DYNAMIC}",
            },
        }
        if self.cuda:
            self.identity_["settings"]["cuda_device"] = torch.cuda.get_device_name(self.device)
            self.identity_["settings"]["tf32_matmul"] = str(torch.backends.cuda.matmul.allow_tf32).lower()

    def identity(self):
        return self.identity_

    def reset(self):
        from transformers import DynamicCache

        self.cache = DynamicCache()

    def _stretch(self, started):
        """`stretch` after the device finished the step (a GPU runs it asynchronously)."""
        if SLOWDOWN > 0.0:
            self.synchronize()
            stretch(started)

    def _forward(self, ids):
        started = time.perf_counter_ns()
        out = self.model(
            input_ids=self.torch.tensor([ids], dtype=self.torch.long, device=self.device),
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.cache = out.past_key_values
        logits = out.logits[0, -1].float()
        self._stretch(started)
        return logits

    def prefill(self, prompt):
        return self._forward(prompt)

    def recompute(self, ids):
        """The logits after `ids` without a KV cache (`use_cache=False`): the whole prefix again."""
        started = time.perf_counter_ns()
        out = self.model(
            input_ids=self.torch.tensor([ids], dtype=self.torch.long, device=self.device),
            use_cache=False,
            logits_to_keep=1,
        )
        logits = out.logits[0, -1].float()
        self._stretch(started)
        return logits

    def decode(self, token):
        return self._forward([token])

    def padded_batch(self, prompts, generation):
        """One batch the way `generate` runs it: the prompts left-padded to one length with an
        attention mask (padding masked out, positions counted from each prompt's first real
        token), one forward pass over the whole batch, then one decode step per token over every
        sequence with a DynamicCache; a finished sequence (EOS, when asked) keeps being fed padding
        until the batch ends, as `generate` does. Returns (prefill_ns, step_ns, per-sequence
        tokens, per-sequence index of the step that ended it (0 = prefill)); the clock starts at
        the call."""
        from transformers import DynamicCache

        torch = self.torch
        n = generation["max_new_tokens"]
        longest = max(len(p) for p in prompts)
        ids = [[self.pad_id] * (longest - len(p)) + list(p) for p in prompts]
        mask = [[0] * (longest - len(p)) + [1] * len(p) for p in prompts]
        ids = torch.tensor(ids, dtype=torch.long, device=self.device)
        mask = torch.tensor(mask, dtype=torch.long, device=self.device)
        # As `generate` computes them for left padding.
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        samplers = [Sampler(generation["sampling"]) for _ in prompts]
        tokens = [[] for _ in prompts]
        ended = [None] * len(prompts)
        cache = DynamicCache()
        self.synchronize()
        start = time.perf_counter_ns()

        def advance(ids, step):
            """One forward pass over the batch (the cache grows), then each unfinished sequence
            samples its next token from its last position's logits."""
            nonlocal cache
            started = time.perf_counter_ns()
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
            self._stretch(started)
            for i, sampler in enumerate(samplers):
                if ended[i] is not None:
                    continue
                t = sampler.sample(logits[i])
                tokens[i].append(t)
                if len(tokens[i]) >= n or (
                    generation["stop_at_eos"] and t in generation["eos_token_ids"]
                ):
                    ended[i] = step

        advance(ids, 0)
        self.synchronize()
        last = time.perf_counter_ns()
        prefill_ns = last - start
        steps = []
        while any(e is None for e in ended):
            feed = [[t[-1] if e is None else self.pad_id] for t, e in zip(tokens, ended)]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            positions = positions[:, -1:] + 1
            advance(torch.tensor(feed, dtype=torch.long, device=self.device), len(steps) + 1)
            self.synchronize()
            now = time.perf_counter_ns()
            steps.append(now - last)
            last = now
        return prefill_ns, steps, tokens, ended

    def synchronize(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def peak_device_bytes(self):
        if self.cuda:
            return int(self.torch.cuda.max_memory_allocated(self.device))
        return None


# ---------------------------------------------------------------------------------------------
# The loop (a port of engine-kit's run_scenario / measure_prompt / one_sequence).

def unix_of(perf_ns):
    """The Unix time (ns) of a past `time.perf_counter_ns()` reading: `start_unix_ns`, which
    places iterations and load levels on the GPU telemetry's timeline (never used for durations)."""
    return time.time_ns() - (time.perf_counter_ns() - perf_ns)


def one_sequence(engine, scenario, prompt, forced):
    g = scenario["generation"]
    sampler = Sampler(g["sampling"])
    tokens, inter, tops = [], [], []
    fed = []  # without the KV cache: the tokens fed so far
    want_top = forced is not None
    engine.reset()
    engine.synchronize()
    start = time.perf_counter_ns()
    logits = engine.prefill(prompt)
    token = sampler.sample(logits)
    if want_top:
        tops.append(top_k(logits))
    engine.synchronize()
    last = time.perf_counter_ns()
    first_token(last)
    ttft = last - start
    tokens.append(token)
    while len(tokens) < g["max_new_tokens"]:
        if forced is None and g["stop_at_eos"] and token in g["eos_token_ids"]:
            break
        feed = forced[len(tokens) - 1] if forced is not None else token
        if g.get("kv_cache", True):
            logits = engine.decode(feed)
        else:
            fed.append(feed)
            logits = engine.recompute(list(prompt) + fed)
        token = sampler.sample(logits)
        if want_top:
            tops.append(top_k(logits))
        engine.synchronize()
        now = time.perf_counter_ns()
        inter.append(now - last)
        last = now
        tokens.append(token)
    engine.last_logits = logits
    sample = {
        "ttft_ns": ttft,
        "e2e_ns": last - start,
        "new_tokens": len(tokens),
        "inter_token_ns": inter,
        "start_unix_ns": unix_of(start),
    }
    return sample, tokens, tops


def wants_more(scenario, measured, elapsed_ms):
    """lab_protocol's `ScenarioRequest::wants_more`: until `iterations` and `min_duration_ms` are
    both reached, cut at `max_duration_ms` once one iteration was measured."""
    if measured == 0:
        return True
    max_ms = scenario.get("max_duration_ms")
    if max_ms is not None and elapsed_ms >= max_ms:
        return False
    return measured < scenario["iterations"] or elapsed_ms < scenario.get("min_duration_ms", 0)


def measure_prompt(engine, scenario, prompt):
    forced = prompt.get("forced_token_ids") if scenario["kind"] == "teacher_forced" else None
    warm, iters = scenario["warmup_iterations"], scenario["iterations"]
    reset = peak_rss_start()
    samples, first_seen, reference, top_logits = [], None, None, []
    deterministic = True
    measured_ms = 0
    i = 0
    while True:
        warmup = i < warm
        i += 1
        if not warmup and not wants_more(scenario, len(samples), measured_ms):
            break
        started = time.perf_counter_ns()
        sample, tokens, tops = one_sequence(engine, scenario, prompt["token_ids"], forced)
        if first_seen is None:
            first_seen = tokens
        elif first_seen != tokens:
            deterministic = False
        if warmup:
            log(f"progress: {scenario['id']} {prompt['name']} warm-up {i}/{warm}")
            continue
        measured_ms += (time.perf_counter_ns() - started) // 1_000_000
        if reference is None:
            reference = tokens
            top_logits = tops
        samples.append(sample)
        log(
            f"progress: {scenario['id']} {prompt['name']} iteration {len(samples)}/{iters}"
            f" ({measured_ms / 1e3:.1f} s measured)"
        )
    report = {
        "prompt": prompt["name"],
        "prompt_tokens": len(prompt["token_ids"]),
        "generated_token_ids": reference or [],
        "deterministic": deterministic,
        "warmup_iterations": warm,
        "samples": samples,
        "peak_rss_bytes": peak_rss_finish(reset),
    }
    if forced is not None:
        report["top_logits"] = top_logits
    return report


# ---------------------------------------------------------------------------------------------
# Load scenarios (S2, S3), batched the way transformers users batch an eager model: S2 as padded
# batches (PADDED), S3 as dynamic batches of the waiting requests (DYNAMIC), with the kit's
# workload, arrivals and accounting. `sequence_batches` / `sequence_requests` are the port of
# engine-kit's `run_load_sequences` (one whole sequence at a time), kept as the reference path.

LOAD_KINDS = ("batched_throughput", "concurrent_load")
SERIAL = "none (serial)"
PADDED = (
    "padded batches as generate runs them: left padding + attention mask, eager attention, "
    "DynamicCache, the whole batch to the end together"
)
DYNAMIC = (
    "dynamic batches: whatever requests wait when the engine is free (up to max_batch) run as one "
    "padded batch to the end; later requests wait for it"
)


def poisson_arrivals(rate_per_s, seed, n):
    """Open-loop arrival offsets (ns), exactly as engine-kit's `poisson_arrivals`."""
    state, t, out = seed, 0.0, []
    for _ in range(n):
        state, z = splitmix64(state)
        u = (z >> 11) / float(1 << 53)
        t += -math.log(1.0 - u) / rate_per_s
        out.append(int(t * 1e9))
    return out


class Outputs:
    def __init__(self):
        self.first = {}
        self.deterministic = True

    def record(self, name, ids):
        if name in self.first:
            if self.first[name] != ids:
                self.deterministic = False
        else:
            self.first[name] = list(ids)

    def sorted(self):
        return [{"prompt": k, "token_ids": v} for k, v in sorted(self.first.items())]


def load_point(level):
    return {
        "level": level,
        "max_active": 0,
        "outputs": [],
        "deterministic": True,
        "peak_rss_bytes": None,
        "error": None,
    }


def batch_level(scenario, b, duration_ms, one_batch):
    """S2 at batch size `b`: warm-up batches, then measured batches until `duration_ms` passed
    (at least one). `one_batch(prompts, origin_ns)` runs the batch once and returns its samples,
    how many sequences it decoded together and the (prompt name, ids) it generated; an exception
    ends the level and keeps what was measured."""
    reset = peak_rss_start()
    point, outputs, batches = load_point(b), Outputs(), []
    prompts = [scenario["prompts"][i % len(scenario["prompts"])] for i in range(b)]
    start = time.perf_counter_ns()
    i = 0
    while True:
        warmup = i < scenario["warmup_iterations"]
        if i == scenario["warmup_iterations"]:
            start = time.perf_counter_ns()
        if not warmup and batches and time.perf_counter_ns() - start >= duration_ms * 1_000_000:
            break
        try:
            samples, active, produced = one_batch(prompts, start)
        except Exception as e:  # noqa: BLE001 - a failure ends the level, keeps what was measured
            point["error"] = f"batch {i + 1}: engine error: {e}"
            break
        point["max_active"] = max(point["max_active"], active)
        for name, ids in produced:
            outputs.record(name, ids)
        if not warmup:
            batches.extend(samples)
        log(f"progress: {scenario['id']} batch size {b}: {'warm-up batch' if warmup else 'batch'} {i + 1}")
        i += 1
    point["batches"] = batches
    point["outputs"], point["deterministic"] = outputs.sorted(), outputs.deterministic
    point["peak_rss_bytes"] = peak_rss_finish(reset)
    point["start_unix_ns"] = unix_of(start)
    return point


def sequence_batches(engine, scenario, b, duration_ms):
    """S2 served one sequence at a time (one sample per sequence)."""

    def one_batch(prompts, origin):
        samples, produced = [], []
        for p in prompts:
            start_ns = time.perf_counter_ns() - origin
            sample, tokens, _ = one_sequence(engine, scenario, p["token_ids"], None)
            produced.append((p["name"], tokens))
            samples.append({
                "start_ns": start_ns,
                "sequences": 1,
                "prompt_tokens": len(p["token_ids"]),
                "prefill_ns": sample["ttft_ns"],
                "step_ns": sample["inter_token_ns"],
                "new_tokens": len(tokens),
            })
        return samples, 1, produced

    return batch_level(scenario, b, duration_ms, one_batch)

def sequence_requests(engine, scenario, c, arrival, total):
    reset = peak_rss_start()
    point, outputs, records, queue = load_point(c), Outputs(), [], []
    arrivals = None
    if arrival["kind"] == "poisson":
        arrivals = poisson_arrivals(arrival["rate_per_s"], arrival["seed"], total)
    origin = time.perf_counter_ns()
    now = lambda: time.perf_counter_ns() - origin  # noqa: E731
    submitted = 0
    if arrivals is None:
        for client in range(min(c, total)):
            queue.append((submitted, client, 0))
            submitted += 1
    while len(records) < total:
        if arrivals is not None:
            while submitted < total and arrivals[submitted] <= now():
                queue.append((submitted, submitted, arrivals[submitted]))
                submitted += 1
            if not queue:
                time.sleep(max(0, arrivals[submitted] - now()) / 1e9)
                continue
        if not queue:
            break
        index, client, submit_ns = queue.pop(0)
        p = scenario["prompts"][index % len(scenario["prompts"])]
        admit = now()
        r = {
            "client": client,
            "prompt": p["name"],
            "prompt_tokens": len(p["token_ids"]),
            "submit_ns": submit_ns,
            "admit_ns": admit,
            "first_token_ns": None,
            "done_ns": None,
            "new_tokens": 0,
            "status": {"kind": "completed"},
        }
        try:
            sample, tokens, _ = one_sequence(engine, scenario, p["token_ids"], None)
            point["max_active"] = 1
            r["first_token_ns"] = admit + sample["ttft_ns"]
            r["done_ns"] = admit + sample["e2e_ns"]
            r["new_tokens"] = len(tokens)
            outputs.record(p["name"], tokens)
        except Exception as e:  # noqa: BLE001 - this request failed, the others go on
            r["done_ns"] = now()
            r["status"] = {"kind": "failed", "reason": f"engine error: {e}"}
        records.append(r)
        if arrivals is None and submitted < total:
            queue.append((submitted, client, r["done_ns"]))
            submitted += 1
    records.sort(key=lambda r: (r["submit_ns"], r["client"]))
    point["requests"] = records
    point["outputs"], point["deterministic"] = outputs.sorted(), outputs.deterministic
    point["peak_rss_bytes"] = peak_rss_finish(reset)
    point["start_unix_ns"] = unix_of(origin)
    return point


def padded_batches(engine, scenario, b, duration_ms):
    """S2 at batch size `b` as padded batches (PADDED)."""

    def one_batch(prompts, origin):
        start_ns = time.perf_counter_ns() - origin
        prefill_ns, steps, tokens, _ = engine.padded_batch(
            [p["token_ids"] for p in prompts], scenario["generation"]
        )
        sample = {
            "start_ns": start_ns,
            "sequences": len(prompts),
            "prompt_tokens": sum(len(p["token_ids"]) for p in prompts),
            "prefill_ns": prefill_ns,
            "step_ns": steps,
            "new_tokens": sum(len(t) for t in tokens),
        }
        return [sample], len(prompts), [(p["name"], t) for p, t in zip(prompts, tokens)]

    return batch_level(scenario, b, duration_ms, one_batch)


def dynamic_requests(engine, scenario, c, arrival, total, limit):
    """S3 at concurrency `c` with DYNAMIC batches: the same workload and accounting as the kit's
    scheduler (closed loop or seeded Poisson arrivals, submit/admit/first-token/done per request),
    but a batch runs to its end before the next one is formed."""
    reset = peak_rss_start()
    point, outputs, records, queue = load_point(c), Outputs(), [], []
    arrivals = None
    if arrival["kind"] == "poisson":
        arrivals = poisson_arrivals(arrival["rate_per_s"], arrival["seed"], total)
    origin = time.perf_counter_ns()
    now = lambda: time.perf_counter_ns() - origin  # noqa: E731

    def submit(client, at):
        p = scenario["prompts"][len(records) % len(scenario["prompts"])]
        records.append({
            "client": client,
            "prompt": p["name"],
            "prompt_tokens": len(p["token_ids"]),
            "submit_ns": at,
            "admit_ns": None,
            "first_token_ns": None,
            "done_ns": None,
            "new_tokens": 0,
            "status": {"kind": "refused", "reason": "not served"},
        })
        queue.append(len(records) - 1)

    if arrivals is None:
        for client in range(min(c, total)):
            submit(client, 0)
    last_progress = time.monotonic()
    while True:
        if arrivals is not None:
            while len(records) < total and arrivals[len(records)] <= now():
                submit(len(records), arrivals[len(records)])
            if not queue:
                if len(records) >= total:
                    break
                time.sleep(max(0, arrivals[len(records)] - now()) / 1e9)
                continue
        if not queue:
            break
        batch, queue[:] = queue[:limit], queue[limit:]
        admit = now()
        for i in batch:
            records[i]["admit_ns"] = admit
        point["max_active"] = max(point["max_active"], len(batch))
        prompts = [scenario["prompts"][i % len(scenario["prompts"])] for i in batch]
        try:
            prefill_ns, steps, tokens, ended = engine.padded_batch(
                [p["token_ids"] for p in prompts], scenario["generation"]
            )
            step_end = [admit + prefill_ns]
            for ns in steps:
                step_end.append(step_end[-1] + ns)
            for i, t, e, p in zip(batch, tokens, ended, prompts):
                r = records[i]
                r["first_token_ns"] = step_end[0]
                r["done_ns"] = step_end[e]
                r["new_tokens"] = len(t)
                r["status"] = {"kind": "completed"}
                outputs.record(p["name"], t)
        except Exception as e:  # noqa: BLE001 - these requests failed, the others go on
            for i in batch:
                records[i]["done_ns"] = now()
                records[i]["status"] = {"kind": "failed", "reason": f"engine error: {e}"}
        if arrivals is None:
            # Each client sends its next request when its previous one ended.
            for i in sorted(batch, key=lambda i: records[i]["done_ns"]):
                if len(records) < total:
                    submit(records[i]["client"], records[i]["done_ns"])
        if time.monotonic() - last_progress >= 2:
            last_progress = time.monotonic()
            ended_n = sum(1 for r in records if r["done_ns"] is not None)
            log(f"progress: {scenario['id']} concurrency {c} requests {ended_n}/{total} ended")
    point["requests"] = records
    point["outputs"], point["deterministic"] = outputs.sorted(), outputs.deterministic
    point["peak_rss_bytes"] = peak_rss_finish(reset)
    point["start_unix_ns"] = unix_of(origin)
    return point


def run_load(engine, scenario, batched=True):
    """The load scenarios: padded / dynamic batches, or (batched=False, the port's reference
    path) one sequence at a time."""
    load = scenario["load"]
    points = []
    if load["kind"] == "batches":
        for b in load["batch_sizes"]:
            if batched:
                points.append(padded_batches(engine, scenario, b, load["duration_ms"]))
            else:
                points.append(sequence_batches(engine, scenario, b, load["duration_ms"]))
        batching = PADDED if batched else SERIAL
    else:
        for c in load["concurrency"]:
            total = max(load["requests"], c)
            if batched:
                limit = max(1, min(c, load["max_batch"]))
                points.append(dynamic_requests(engine, scenario, c, load["arrival"], total, limit))
            else:
                points.append(sequence_requests(engine, scenario, c, load["arrival"], total))
        batching = DYNAMIC if batched else SERIAL
    return {
        "id": scenario["id"],
        "kind": scenario["kind"],
        "prompts": [],
        "error": None,
        "batching": batching,
        "points": points,
    }


def run_scenario(engine, scenario):
    if scenario["kind"] in LOAD_KINDS:
        return run_load(engine, scenario)
    if scenario["kind"] == "micro":
        return micro.run_micro(engine, scenario, log)
    if scenario["kind"] == "lora_step":
        return train.run_lora(engine, scenario, log, peak_rss_start, peak_rss_finish)
    prompts, error, sampling = [], None, []
    for prompt in scenario["prompts"]:
        try:
            prompts.append(measure_prompt(engine, scenario, prompt))
        except Exception as e:  # noqa: BLE001 - an engine error ends the scenario, keeps the rest
            log(f"error: scenario {scenario['id']} prompt {prompt['name']}: {e}")
            error = f"prompt `{prompt['name']}`: engine error: {e}"
            break
    overhead = scenario.get("sampling_overhead")
    if overhead is not None and error is None:
        log(
            f"progress: {scenario['id']} timing {len(overhead['strategies'])} samplers x "
            f"{overhead['samples']} selections"
        )
        sampling = time_strategies(engine.last_logits, overhead)
    out = {"id": scenario["id"], "kind": scenario["kind"], "prompts": prompts, "error": error}
    if sampling:
        out["sampling"] = sampling
    return out


def time_strategies(logits, overhead):
    """engine-kit's `time_strategies`: each strategy a fresh Sampler selecting `samples` tokens
    from the last forward pass's logits (a float32 tensor on the engine's device, as in
    generation: the selection includes what the sampler copies off the device), each timed."""
    out = []
    for sampling in overhead["strategies"]:
        sampler = Sampler(sampling)
        times, ids = [], []
        for _ in range(overhead["samples"]):
            t = time.perf_counter_ns()
            i = sampler.sample(logits)
            times.append(time.perf_counter_ns() - t)
            if len(ids) < SAMPLED_IDS_KEPT:
                ids.append(i)
        out.append(
            {"sampling": sampling, "logits_len": int(logits.shape[-1]), "sample_ns": times, "token_ids": ids}
        )
    return out


def failure_identity(request):
    return {
        "name": ENGINE_NAME,
        "version": ENGINE_VERSION,
        "backend": "torch + transformers",
        "device": "" if request is None else describe_device(request["device"]),
        "dtype": "" if request is None else request["model"]["dtype"],
        "weight_format": "safetensors" if request is None else request["model"]["format"],
        "threads": 0 if request is None else (request.get("threads") or 0),
        "settings": {},
    }


def describe_device(dev):
    return "cpu" if dev["kind"] == "cpu" else f"cuda:{dev['ordinal']}"


def main():
    request = None
    try:
        request = parse_request(sys.stdin.read())
        m = request["model"]
        log(f"loading {m['name']} ({m['format']}, {m['dtype']}) on {describe_device(request['device'])}")
        load_start = time.perf_counter_ns()
        engine = TorchEngine(request)
        engine.synchronize()
        now = time.perf_counter_ns()
        phase("ready")
        load = {
            "process_start_to_ready_ms": (now - PROCESS_START_NS) / 1e6,
            "load_ms": (now - load_start) / 1e6,
        }
        log(f"loaded in {load['load_ms']:.0f} ms")
        import torch

        with torch.inference_mode():
            scenarios = [run_scenario(engine, s) for s in request["scenarios"]]
        load["main_unix_ns"] = PROCESS_START_UNIX_NS
        load["phases"] = [
            {"name": n, "at_ms": (PHASES[n] - PROCESS_START_NS) / 1e6}
            for n in ("runtime_init", "file_open", "weights_parsed", "weights_loaded", "ready")
            if n in PHASES
        ]
        if FIRST_TOKEN_NS[0] is not None:
            load["first_token_ms"] = (FIRST_TOKEN_NS[0] - PROCESS_START_NS) / 1e6
        report = {
            "schema_version": SCHEMA_VERSION,
            "engine": engine.identity(),
            "load": load,
            "memory": {
                "peak_rss_bytes": peak_rss_bytes(),
                "peak_device_bytes": engine.peak_device_bytes(),
            },
            "scenarios": scenarios,
            "error": None,
        }
        ok = True
    except Exception as e:  # noqa: BLE001 - every path writes a report
        msg = str(e) if isinstance(e, EngineError) else f"engine error during load: {type(e).__name__}: {e}"
        if not isinstance(e, EngineError):
            traceback.print_exc(file=sys.stderr)
        log(f"error: {msg}")
        report = {
            "schema_version": SCHEMA_VERSION,
            "engine": failure_identity(request),
            "load": None,
            "memory": {"peak_rss_bytes": peak_rss_bytes(), "peak_device_bytes": None},
            "scenarios": [],
            "error": msg,
        }
        ok = False
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    sys.exit(0 if ok else 1)
