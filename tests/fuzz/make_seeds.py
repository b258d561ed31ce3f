#!/usr/bin/env python3
"""Writes the small hand-made seeds of the fuzz corpus into tests/fuzz/seeds/<target>/.

The rest of each target's seed corpus is copied from committed files by scripts/fuzz.sh
(the recipes, the Hugging Face fixtures' config.json, model.safetensors and tokenizer.json,
the audio fixtures). Standard library only; the output is deterministic.
"""
import gzip
import json
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def idx(magic_type, dims, payload):
    head = struct.pack(">HBB", 0, magic_type, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    return head + payload


def wav(fmt, channels, rate, bits, frames):
    """A RIFF/WAVE file: fmt 1 (integer PCM) or 3 (IEEE float)."""
    block = channels * bits // 8
    data = b"".join(frames)
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def safetensors(tensors, metadata=None):
    """tensors: name -> (dtype, shape, raw bytes)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def main():
    # IDX: two 4x4 images and their labels, raw and gzip-compressed.
    images = idx(0x08, [2, 4, 4], bytes(range(32)))
    labels = idx(0x08, [2], bytes([3, 7]))
    put("idx", "images-raw", images)
    put("idx", "labels-raw", labels)
    put("idx", "images-gz", gzip.compress(images, mtime=0))
    put("idx", "labels-gz", gzip.compress(labels, mtime=0))

    # WAV: 16-bit mono, 8-bit stereo, 32-bit float, 24-bit; 64 frames of a sine each.
    sine = [math.sin(2 * math.pi * 440 * i / 16000) for i in range(64)]
    put("wav", "pcm16-mono", wav(1, 1, 16000, 16, [struct.pack("<h", int(s * 20000)) for s in sine]))
    put("wav", "pcm8-stereo", wav(1, 2, 8000, 8, [bytes([int(128 + s * 100)] * 2) for s in sine]))
    put("wav", "float32", wav(3, 1, 22050, 32, [struct.pack("<f", s) for s in sine]))
    put("wav", "pcm24", wav(1, 1, 44100, 24, [struct.pack("<i", int(s * 2**22))[:3] for s in sine]))

    # safetensors: every dtype the reader converts, and a checkpoint-like metadata block.
    f32 = struct.pack("<4f", 0.5, -1.0, 2.0, 0.0)
    put("safetensors", "f32", safetensors({"w": ("F32", [2, 2], f32)}, {"format": "pt"}))
    put(
        "safetensors",
        "mixed",
        safetensors(
            {
                "a": ("F16", [2], struct.pack("<2e", 1.0, -2.0)),
                "b": ("BF16", [1], b"\x80\x3f"),
                "c": ("I64", [1], struct.pack("<q", 5)),
                "d": ("U8", [3], b"\x01\x02\x03"),
                "e": ("F64", [1], struct.pack("<d", 0.25)),
            }
        ),
    )
    put(
        "safetensors",
        "checkpoint",
        safetensors(
            {"model.w": ("F32", [2, 2], f32), "optim.m.w": ("F32", [2, 2], f32)},
            {
                "format": "pt",
                "pretext.training_state": json.dumps(
                    {
                        "step": 4,
                        "data": {"epoch": 1, "index": 2},
                        "rng": {"seed": list(range(32)), "stream": 0, "word_pos": 64},
                    },
                    separators=(",", ":"),
                ),
            },
        ),
    )

    # hf_model: a fixture's number (its place in fuzz_targets/hf_model.rs), then its config.json.
    fixtures = os.path.join(HERE, "..", "fixtures", "hf")
    for i, name in enumerate(HF_MODEL_FIXTURES):
        with open(os.path.join(fixtures, name, "config.json"), "rb") as f:
            put("hf_model", name, bytes([i]) + f.read())


HF_MODEL_FIXTURES = [
    "bert_cls", "bert_mlm", "bert_model", "data2vec_audio", "hubert", "hubert_ln",
    "roberta_cls", "roberta_mlm", "roberta_model", "vit_classifier", "vit_mae_norm_pix",
    "vit_mae_raw", "vit_model", "w2v2_group", "w2v2_legacy", "w2v2_stable",
]

if __name__ == "__main__":
    main()
