"""alignkit.data.formats and .chat: format detection, row validation, the HH-RLHF split, chat rendering."""

import doctest
import subprocess
import sys

import pytest

from alignkit.data import (
    DataError,
    chat,
    collate,
    detect_format,
    errors,
    formats,
    loading,
    normalize_row,
    render_messages,
    split_hh_rlhf,
    split_messages,
    tokenize,
)

H, A = "\n\nHuman:", "\n\nAssistant:"


@pytest.mark.parametrize("module", [formats, loading, chat, collate, errors, tokenize])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0


def test_importing_alignkit_data_loads_neither_transformers_nor_datasets():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('transformers', 'datasets', 'tokenizers'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import alignkit.data as d\n"
        "print(len(d.load_rows([{'prompt': 'p'}])))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


# ---------------------------------------------------------------------------------------------- detection
@pytest.mark.parametrize(
    "keys, expected",
    [
        (["prompt", "completion"], "prompt_completion"),
        (["prompt", "completion", "id"], "prompt_completion"),
        (["messages"], "messages"),
        (["prompt", "chosen", "rejected"], "preference"),
        (["chosen", "rejected"], "hh_rlhf"),
        (["prompt"], "prompt"),
        (["prompt", "answer"], "prompt"),  # a bare reference answer: a prompt row with a column
        (["question", "answer"], "gsm8k"),
    ],
)
def test_detect_format(keys, expected):
    assert detect_format(keys) == expected


@pytest.mark.parametrize(
    "keys, why",
    [
        (["text"], "no format matches"),
        (["prompt", "completion", "chosen", "rejected"], "several formats ['prompt_completion', 'preference']"),
        (["messages", "prompt"], "several formats ['messages', 'prompt']"),
        (["question", "answer", "prompt"], "several formats ['prompt', 'gsm8k']"),
    ],
)
def test_detect_format_errors_list_the_keys_and_the_formats(keys, why):
    with pytest.raises(DataError, match="cannot detect the format") as e:
        detect_format(keys)
    message = str(e.value)
    assert why in message and str(sorted(keys)) in message
    for name in formats.FORMATS:
        assert name in message


# -------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "row, fmt, field, problem",
    [
        ({"prompt": "p"}, "prompt_completion", "completion", "is missing"),
        ({"prompt": "p", "completion": None}, "prompt_completion", "completion", "is missing (null)"),
        ({"prompt": 3, "completion": "c"}, "prompt_completion", "prompt", "must be a string, got int"),
        ({"prompt": "", "completion": "c"}, "prompt_completion", "prompt", "is empty"),
        ({"prompt": "p", "completion": " \n"}, "prompt_completion", "completion", "only whitespace"),
        ({"prompt": "p", "chosen": "x", "rejected": "x"}, "preference", "rejected", "identical to 'chosen'"),
        ({"prompt": "p", "chosen": "x"}, "preference", "rejected", "is missing"),
        ({"prompt": ["p"]}, "prompt", "prompt", "must be a string, got list"),
        ({"question": "q", "answer": "4"}, "gsm8k", "answer", "#### <final answer>"),
        ({"question": "q", "answer": "so 4 ####  "}, "gsm8k", "answer", "#### <final answer>"),
        ({"question": "q", "answer": "#### 4", "prompt": "p"}, "gsm8k", "prompt", "from 'question'"),
        ({"chosen": H + " a" + A + " b", "rejected": H + " a" + A + " c", "prompt": "p"}, "hh_rlhf", "prompt",
         "format='preference'"),
        ({"messages": "hi"}, "messages", "messages", "must be a list"),
        ({}, "messages", "messages", "is missing"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages", "messages", "has 1 message(s)"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}, "messages",
         "messages[1].role", "must be the assistant's"),
        ({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}]}, "messages",
         "messages[0].content", "is empty"),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}, "messages",
         "messages[0].content", "is missing"),
        ({"messages": ["hi", {"role": "assistant", "content": "y"}]}, "messages", "messages[0]", "got str"),
    ],
)
def test_invalid_rows_name_the_field(row, fmt, field, problem):
    with pytest.raises(DataError) as e:
        normalize_row(row, fmt)
    assert e.value.field == field
    assert problem in str(e.value)
    assert str(e.value).startswith(f"field {field!r}: ")


def test_a_row_that_is_not_an_object():
    with pytest.raises(DataError, match="must be a JSON object .* got list"):
        normalize_row(["prompt", "completion"], "prompt_completion")


def test_normalised_rows_keep_other_columns_and_rename_the_gsm8k_question():
    assert normalize_row({"prompt": "p", "completion": "c", "id": 1}, "prompt_completion") == {
        "prompt": "p", "completion": "c", "id": 1}
    assert normalize_row({"question": "q?", "answer": "2+2=4\n#### 4", "level": 1}, "gsm8k") == {
        "prompt": "q?", "answer": "2+2=4\n#### 4", "level": 1}
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo", "name": "bot"}]
    out = normalize_row({"messages": msgs, "id": 2}, "messages")
    assert out == {"messages": msgs, "id": 2} and out["messages"][0] is not msgs[0]  # copied, not aliased


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format 'sft'"):
        normalize_row({"prompt": "p"}, "sft")


# ------------------------------------------------------------------------------------------------ HH-RLHF
def test_hh_split_single_turn():
    chosen = f"{H} How do I bake bread?{A} Mix flour, water and yeast."
    rejected = f"{H} How do I bake bread?{A} Buy it."
    assert split_hh_rlhf(chosen, rejected) == (f"{H} How do I bake bread?{A}", " Mix flour, water and yeast.",
                                                " Buy it.")


def test_hh_split_multi_turn_uses_the_last_shared_assistant_marker():
    history = f"{H} hi{A} Hello! How can I help?{H} Tell me a joke."
    chosen = f"{history}{A} Why did the chicken cross the road?"
    rejected = f"{history}{A} No."
    prompt, c, r = split_hh_rlhf(chosen, rejected)
    assert prompt == history + A
    assert (c, r) == (" Why did the chicken cross the road?", " No.")
    assert prompt + c == chosen and prompt + r == rejected


def test_hh_split_when_the_responses_share_a_beginning():
    # The common prefix runs into the responses (" Sure, "); the prompt still ends at the marker.
    chosen, rejected = f"{H} help?{A} Sure, here it is.", f"{H} help?{A} Sure, no."
    assert split_hh_rlhf(chosen, rejected) == (f"{H} help?{A}", " Sure, here it is.", " Sure, no.")
    # One response a prefix of the other.
    assert split_hh_rlhf(f"{H} q{A} Yes", f"{H} q{A} Yes, indeed") == (f"{H} q{A}", " Yes", " Yes, indeed")


def test_hh_split_marker_only_partly_shared():
    # "\n\nAssistant:" vs "\n\nAssistance" share "\n\nAssistan": that occurrence is not shared whole, so the
    # split falls back to the earlier, fully shared marker, and the responses then hold a whole turn.
    chosen, rejected = f"{H} a{A} b{H} c{A} d", f"{H} a{A} b{H} c\n\nAssistance d"
    with pytest.raises(DataError, match="differ before their final assistant turn") as e:
        split_hh_rlhf(chosen, rejected)
    assert e.value.field == "chosen"


@pytest.mark.parametrize(
    "chosen, rejected, field, problem",
    [
        (f"{H} a{A} b", f"{H} a{A} b", "rejected", "identical"),
        (f"{H} a b", f"{H} a c", "chosen", "shares no '\\n\\nAssistant:'"),
        (f"{H} a{A} ", f"{H} a{A} b", "chosen", "empty response"),
        (f"{H} a{A} b{H} c{A} d", f"{H} a{A} x{H} c{A} d", "chosen", "differ before their final assistant turn"),
    ],
)
def test_hh_split_failures(chosen, rejected, field, problem):
    with pytest.raises(DataError, match=problem.replace("\\", "\\\\")) as e:
        split_hh_rlhf(chosen, rejected)
    assert e.value.field == field


# --------------------------------------------------------------------------------------------------- chat
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"}]


def test_default_message_format():
    assert render_messages(CHAT) == "system: Be brief.\nuser: 2+2?\nassistant: 4\n"
    assert render_messages(CHAT[:2], add_generation_prompt=True) == "system: Be brief.\nuser: 2+2?\nassistant:"
    assert split_messages(CHAT) == ("system: Be brief.\nuser: 2+2?\nassistant:", " 4\n")


class _TemplateTokenizer:
    """Stands in for a transformers tokenizer with a chat template (render only)."""

    chat_template = "chatml"
    additional_special_tokens = ["<|im_start|>", "<|im_end|>"]
    eos_token = "<|im_end|>"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def test_the_chat_template_is_used_when_there_is_one():
    prompt, completion = split_messages(CHAT, _TemplateTokenizer())
    assert prompt.endswith("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert completion == "4<|im_end|>\n"


def test_a_template_that_rewrites_the_prompt_cannot_be_split():
    class Rewriting(_TemplateTokenizer):
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return ("GEN " if add_generation_prompt else "") + super().apply_chat_template(messages, tokenize, False)

    with pytest.raises(DataError, match="does not start with its rendering of the prompt") as e:
        split_messages(CHAT, Rewriting())
    assert e.value.field == "messages"


def test_a_prompt_is_rendered_as_a_user_turn_after_the_system_prompt_only_when_asked():
    from alignkit.data.chat import render_prompt

    tok = _TemplateTokenizer()
    assert render_prompt("2+2?", tok) == ("2+2?", False)  # off: the text as is
    text, rendered = render_prompt("2+2?", tok, "on", "End with #### N.")
    assert rendered and text == ("<|im_start|>system\nEnd with #### N.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                                 "<|im_start|>assistant\n")
    assert render_prompt("2+2?", tok, "auto")[0].endswith("<|im_start|>assistant\n")
    assert render_prompt("2+2?", None, "auto") == ("2+2?", False)  # no template: auto is off


@pytest.mark.parametrize("mode, tokenizer, system, match", [
    ("on", None, "", "chat_template=on but the tokenizer"),
    ("off", _TemplateTokenizer(), "Be brief.", "system_prompt is set but no chat template is applied"),
    ("auto", None, "Be brief.", "the tokenizer has none"),
    ("yes", None, "", "chat_template must be one of"),
])
def test_a_prompt_that_cannot_be_rendered_as_asked_is_an_error(mode, tokenizer, system, match):
    from alignkit.data.chat import render_prompt

    with pytest.raises(ValueError, match=match):
        render_prompt("2+2?", tokenizer, mode, system)


def test_auto_renders_a_prompt_once_and_sft_rows_become_a_user_turn_and_a_reply():
    from alignkit.data.chat import RenderedPrompt, looks_rendered, render_prompt, render_prompt_completion

    tok = _TemplateTokenizer()
    once, rendered = render_prompt("2+2?", tok, "auto")
    assert rendered and render_prompt(once, tok, "auto") == (once, True)  # holds <|im_start|>: not rendered again
    assert looks_rendered(once, tok) and not looks_rendered("2+2?", tok)
    assert render_prompt(RenderedPrompt("as given"), tok, "on") == ("as given", True)
    with pytest.raises(ValueError, match="already rendered"):
        render_prompt(once, tok, "auto", "Be brief.")
    prompt, completion, used = render_prompt_completion("2+2?", "4", tok, "auto", "Be brief.")
    assert used and prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n" \
        "<|im_start|>assistant\n" and completion == "4<|im_end|>\n"
    assert render_prompt_completion("2+2?", " 4", tok, "off") == ("2+2?", " 4", False)
    assert render_prompt_completion(once, "4", tok, "auto") == (once, "4", True)


def test_messages_ending_with_a_user_turn_are_chat_prompt_rows(tmp_path):
    from alignkit.data import load_rows
    from alignkit.data.chat import render_chat_prompt

    rows = load_rows([{"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}])
    assert rows.format == "chat_prompt" and rows[0]["answer"] == "4"
    assert load_rows([{"messages": CHAT}]).format == "messages"  # ends with the assistant's turn: an SFT example
    with pytest.raises(DataError, match="the last turn is the assistant's"):
        load_rows([{"messages": CHAT}], format="chat_prompt")
    with pytest.raises(DataError, match="non-empty list"):
        load_rows([{"messages": []}], format="chat_prompt")
    tok = _TemplateTokenizer()
    text = render_chat_prompt(rows[0]["messages"], tok, "auto", "Be brief.")
    assert text.startswith("<|im_start|>system\nBe brief.") and text.endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="chat_template=off"):
        render_chat_prompt(rows[0]["messages"], tok, "off")
    with pytest.raises(ValueError, match="their own system turn"):
        render_chat_prompt(CHAT[:2], tok, "auto", "Be brief.")
