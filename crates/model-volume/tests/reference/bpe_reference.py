"""Independent reference tokenizer for SmolLM2's GGUF, used to produce the committed token ids
in tokenizer_reference.json that the Rust test compares the lab's rebuilt tokenizer.json against.

Independent of the lab's Rust code and of Hugging Face `tokenizers`: it reads the vocabulary and
merges with the `gguf` package (llama.cpp's own Python reader), pre-tokenizes the way llama.cpp's
`smollm` pre-tokenizer does (first split off every digit, `\\p{N}`, then the GPT-2 regex on each
remaining piece), maps bytes with GPT-2's bytes_to_unicode table and runs the classic GPT-2
lowest-rank-first BPE merge loop. Control tokens (token_type 3) written literally in the text
are matched first, as llama.cpp does with parse_special=true.

Regenerate (needs `pip install gguf regex`):
    python bpe_reference.py <models>/smollm2-135m/model.gguf corpus.json > tokenizer_reference.json
"""
import json
import sys

import gguf
import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def field_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def field_ints(reader, key):
    f = reader.fields[key]
    return [int(f.parts[i][0]) for i in f.data]


class Reference:
    def __init__(self, gguf_path):
        r = gguf.GGUFReader(gguf_path)
        self.tokens = field_strings(r, "tokenizer.ggml.tokens")
        types = field_ints(r, "tokenizer.ggml.token_type")
        merges = field_strings(r, "tokenizer.ggml.merges")
        self.vocab = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {tuple(m.split(" ", 1)): i for i, m in enumerate(merges)}
        self.control = sorted((t for t, ty in zip(self.tokens, types) if ty == 3), key=len, reverse=True)
        self.byte_map = bytes_to_unicode()
        self.gpt2 = regex.compile(GPT2_PATTERN)

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), None), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            ranked = [p for p in pairs if p[0] is not None]
            if not ranked:
                break
            best = min(ranked)[0]
            best_pair = next((parts[j], parts[j + 1]) for r, j in pairs if r == best)
            merged = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best_pair:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return [self.vocab[p] for p in parts]

    def encode_plain(self, text):
        ids = []
        # llama.cpp smollm: regex 1 "\p{N}" splits digits off, regex 2 (GPT-2) splits each piece.
        pieces = []
        last = 0
        for m in regex.finditer(r"\p{N}", text):
            if m.start() > last:
                pieces.append(text[last:m.start()])
            pieces.append(m.group())
            last = m.end()
        if last < len(text):
            pieces.append(text[last:])
        for piece in pieces:
            for word in self.gpt2.findall(piece):
                mapped = "".join(self.byte_map[b] for b in word.encode("utf-8"))
                ids.extend(self.bpe(mapped))
        return ids

    def encode(self, text):
        ids = []
        i = 0
        start = 0
        while i < len(text):
            hit = next((c for c in self.control if text.startswith(c, i)), None)
            if hit:
                if i > start:
                    ids.extend(self.encode_plain(text[start:i]))
                ids.append(self.vocab[hit])
                i += len(hit)
                start = i
            else:
                i += 1
        if start < len(text):
            ids.extend(self.encode_plain(text[start:]))
        return ids


def main():
    ref = Reference(sys.argv[1])
    corpus = json.load(open(sys.argv[2], encoding="utf-8"))
    # One entry per line keeps diffs readable.
    lines = [json.dumps({"text": t, "ids": ref.encode(t)}, ensure_ascii=False) for t in corpus]
    sys.stdout.write("[\n" + ",\n".join(lines) + "\n]\n")


if __name__ == "__main__":
    main()
