"""The tokenizer: a thin, exact wrapper over a `tokenizers` tokenizer.json, plus Qwen's ChatML written by hand.

Rewards are computed on decoded text and prompts are built from text, so three defaults of the `tokenizers`
library are overridden on purpose:
- `encode` adds no special tokens (Qwen has no BOS), yet special tokens *written in the text*, such as
  `<|im_start|>`, still become their single ids (they are "added tokens" matched before BPE).
- `decode` keeps special tokens unless asked otherwise: dropping them would silently erase `<|im_end|>` and
  friends from the text a reward reads.
- EOS is a *set*. A base Qwen2.5 ends with `<|endoftext|>`, an instruct one with `<|im_end|>`, and the two
  config files may name different ones; the rollout stops on any of them.

Nothing here is specific to Qwen's ids: every special token is looked up in the files, so a tiny tokenizer
trained with `tokenizers` (with, say, only `<|endoftext|>`) works the same way.

Files read from the checkpoint folder:
    tokenizer.json          required: vocabulary, merges, pre-tokenizer, added tokens
    tokenizer_config.json   optional: "eos_token", "pad_token" (a string or {"content": ...})
    generation_config.json  optional: "eos_token_id", "pad_token_id" (an int or a list of ints)

`vocab_size` counts the added tokens (151,665 for Qwen2.5). The model's embedding has more rows (151,936):
ids past `vocab_size` are padding rows that decode to nothing, so a sampler should never emit them.

Padding masks must be built from lengths, never by comparing ids with `pad_token_id`: in Qwen the pad
token `<|endoftext|>` is also the base model's EOS, so a real EOS would be masked out.
"""

import json
import os
import shutil

from tokenizers import Tokenizer as _HFTokenizer

# Files that make up a tokenizer folder; `save_pretrained` copies whichever of them exist.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")

# The system prompt Qwen2.5-Instruct's chat template inserts when the conversation has none. Qwen3's template
# inserts nothing, which is our default (`default_system=None`); pass this to match Qwen2.5-Instruct.
QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def chatml(messages, add_generation_prompt=True, default_system=None):
    """Qwen's ChatML as plain text, with no tokenizer needed (tasks use it to know their own prompt).

    Each message becomes `<|im_start|>{role}\\n{content}<|im_end|>\\n`; the generation prompt appends
    `<|im_start|>assistant\\n`. A `default_system` text is put first when the first message is not a system
    message, which is what Qwen2.5-Instruct's template does (tools and tool calls are not supported).
    """
    if not messages:
        raise ValueError("chat template: messages is empty")
    if default_system is not None and messages[0].get("role") != "system":
        messages = [{"role": "system", "content": default_system}] + list(messages)
    parts = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"chat template: message {i} must be a dict with str 'role' and 'content', got {m!r}")
        parts.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def read_json(path):
    """The JSON object in file `path` (a config file of a model folder), or None when the file does not exist.
    A file that is not UTF-8, not JSON, or not an object (say `null`) is a ValueError naming the file."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}), so not a JSON file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object {{...}}, got {json.dumps(obj)[:40]}")
    return obj


def _token_name(value, path, field):
    # tokenizer_config.json writes a token as a string, or as an AddedToken dict {"content": "<|im_end|>", ...}
    name = value.get("content") if isinstance(value, dict) else value
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{path}: tokenizer_config.json {field} must be a token string, got {value!r}")
    return name


def _ids(value, path, field):
    # generation_config.json writes eos_token_id as an int or a list of ints
    ids = [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(type(i) is int for i in ids):
        raise ValueError(f"{path}: generation_config.json {field} must be an int or a list of ints, got {value!r}")
    return ids


class Tokenizer:
    """Encode/decode text exactly as the checkpoint's tokenizer.json does; see the module docstring."""

    def __init__(self, tok, eos_token_ids, eos_token_id, pad_token_id, path=None):
        self._tok = tok  # the `tokenizers.Tokenizer`
        self.eos_token_ids = sorted(set(eos_token_ids))  # every id that ends a completion
        self.eos_token_id = eos_token_id  # the primary EOS (tokenizer_config's, else generation_config's first)
        self.pad_token_id = pad_token_id  # only fills unused slots; masks come from lengths
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.path = path  # the folder it was read from, so save_pretrained can copy the files byte for byte

    @classmethod
    def from_pretrained(cls, path):
        """Read tokenizer.json and the optional config files in folder `path`."""
        tok_file = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(tok_file):
            raise FileNotFoundError(f"no tokenizer.json in {path!r}: a tokenizer folder needs tokenizer.json "
                                    "(tokenizer_config.json and generation_config.json are optional)")
        try:
            tok = _HFTokenizer.from_file(tok_file)
        except Exception as e:  # the Rust library raises a bare Exception for every parse error
            raise ValueError(f"{tok_file}: not a readable tokenizer.json ({e})") from None
        tok_cfg = read_json(os.path.join(path, "tokenizer_config.json")) or {}
        gen_cfg = read_json(os.path.join(path, "generation_config.json")) or {}

        def token_id(name, field):
            i = tok.token_to_id(name)
            if i is None:
                raise ValueError(f"{path}: tokenizer_config.json {field} {name!r} is not in tokenizer.json")
            return i

        # EOS: the union of both files' choices; the primary one is tokenizer_config's when it names one.
        eos_ids = []
        eos_name = _token_name(tok_cfg.get("eos_token"), path, "eos_token")
        if eos_name is not None:
            eos_ids.append(token_id(eos_name, "eos_token"))
        eos_ids += _ids(gen_cfg.get("eos_token_id"), path, "eos_token_id")
        if not eos_ids:
            raise ValueError(f"{path}: no EOS token: neither tokenizer_config.json 'eos_token' nor "
                             "generation_config.json 'eos_token_id' names one")
        bad = [i for i in eos_ids if not 0 <= i < tok.get_vocab_size(with_added_tokens=True)]
        if bad:
            raise ValueError(f"{path}: generation_config.json eos_token_id {bad} is outside the vocabulary")

        # PAD: tokenizer_config's, else generation_config's, else the primary EOS (only ever a filler).
        pad_name = _token_name(tok_cfg.get("pad_token"), path, "pad_token")
        pad_ids = _ids(gen_cfg.get("pad_token_id"), path, "pad_token_id")
        if pad_name is not None:
            pad_id = token_id(pad_name, "pad_token")
        elif pad_ids:
            pad_id = pad_ids[0]
            if not 0 <= pad_id < tok.get_vocab_size(with_added_tokens=True):
                raise ValueError(f"{path}: generation_config.json pad_token_id {pad_id} is outside the vocabulary")
        else:
            pad_id = eos_ids[0]
        return cls(tok, eos_ids, eos_ids[0], pad_id, path=path)

    def check_model(self, vocab_rows):
        """Fail early when the model's embedding (`vocab_rows` rows) cannot hold every token id: the tokenizer
        and the weights then come from different models. More rows than tokens is normal (padding)."""
        if self.vocab_size > vocab_rows:
            raise ValueError(f"{self.path or 'tokenizer'}: the tokenizer has {self.vocab_size} tokens but the model's "
                             f"embedding has {vocab_rows} rows: tokenizer and weights are from different models")

    def encode(self, text):
        """Text to ids, no special tokens added; special tokens written in `text` map to their ids."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts):
        """`encode` over a list, run in parallel by the Rust library."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids, skip_special_tokens=False):
        """Ids to text, keeping special tokens by default (see the module docstring)."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def decode_batch(self, seqs, skip_special_tokens=False):
        return self._tok.decode_batch([list(s) for s in seqs], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token):
        """The id of one token string (e.g. "<|im_end|>"), or None when it is not in the vocabulary."""
        return self._tok.token_to_id(token)

    def id_to_token(self, i):
        return self._tok.id_to_token(i)

    def apply_chat_template(self, messages, add_generation_prompt=True, default_system=None):
        """Qwen ChatML text for `messages` (a list of {"role", "content"}); see `chatml`.

        Returns text, not ids: encode it with `encode`, which maps `<|im_start|>` etc. to their single ids.
        """
        missing = [t for t in ("<|im_start|>", "<|im_end|>") if self._tok.token_to_id(t) is None]
        if missing:
            raise ValueError(f"this tokenizer has no {' / '.join(missing)} token, so it cannot write ChatML; "
                             "use a base (plain text) template instead")
        return chatml(messages, add_generation_prompt=add_generation_prompt, default_system=default_system)

    def save_pretrained(self, path):
        """Copy the tokenizer files into folder `path` (a checkpoint), byte for byte."""
        os.makedirs(path, exist_ok=True)
        if self.path is None:  # built in memory: write tokenizer.json and a config naming EOS and PAD
            self._tok.save(os.path.join(path, "tokenizer.json"))
            cfg = {"eos_token": self.id_to_token(self.eos_token_id), "pad_token": self.id_to_token(self.pad_token_id)}
            with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(cfg, f, indent=2)
            if len(self.eos_token_ids) > 1:  # the other EOS ids live in generation_config.json, as in HF
                with open(os.path.join(path, "generation_config.json"), "w", encoding="utf-8") as f:
                    json.dump({"eos_token_id": self.eos_token_ids}, f, indent=2)
            return
        for name in TOKENIZER_FILES:
            src = os.path.join(self.path, name)
            if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(path, name)):
                shutil.copyfile(src, os.path.join(path, name))
