"""alignkit.data.tokenize: label masking, EOS, truncation modes, errors naming the row, chat rows."""

import copy
import json

import pytest
from tokenizers import processors

from alignkit.data import DataError, load_rows, tokenize_preferences, tokenize_sft
from alignkit.models.tiny import build_tokenizer

CORPUS = ["the cat sat on the mat", "a dog ran fast", "user: assistant: system: hello world be brief"]


@pytest.fixture(scope="module")
def word_tok():
    """One token per word (ids below are looked up, not assumed); pad 0, bos 1, eos 2, no BOS added."""
    return build_tokenizer(CORPUS, vocab_size=64, model="word")


@pytest.fixture(scope="module")
def bos_tok(word_tok):
    """The same vocabulary, but the tokenizer prepends <s> (id 1) to what it encodes, as Llama's does."""
    tok = copy.deepcopy(word_tok)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def ids(tok, text):
    return tok.convert_tokens_to_ids(text.split())


EOS, BOS, X = 2, 1, -100


# ------------------------------------------------------------------------------------------------ SFT
def test_sft_labels_mask_the_prompt_and_the_eos_ends_the_completion(word_tok):
    (ex,) = tokenize_sft([{"prompt": "the cat", "completion": "sat on the mat"}], word_tok, max_length=16)
    the, cat, sat, on, mat = ids(word_tok, "the cat sat on mat")
    assert ex["input_ids"] == [the, cat, sat, on, the, mat, EOS]
    assert ex["labels"] == [X, X, sat, on, the, mat, EOS]


def test_sft_options(word_tok):
    row = [{"prompt": "the cat", "completion": "sat"}]
    the, cat, sat = ids(word_tok, "the cat sat")
    assert tokenize_sft(row, word_tok, 16, completion_only_loss=False)[0] == {
        "input_ids": [the, cat, sat, EOS], "labels": [the, cat, sat, EOS]}
    assert tokenize_sft(row, word_tok, 16, append_eos=False)[0] == {"input_ids": [the, cat, sat],
                                                                      "labels": [X, X, sat]}


def test_sft_prompt_gets_the_tokenizers_bos(bos_tok):
    (ex,) = tokenize_sft([{"prompt": "the cat", "completion": "sat"}], bos_tok, 16)
    the, cat, sat = ids(bos_tok, "the cat sat")
    assert ex["input_ids"] == [BOS, the, cat, sat, EOS] and ex["labels"] == [X, X, X, sat, EOS]
    # A prompt that already holds the BOS as text (chat templates do) does not get a second one.
    (ex,) = tokenize_sft([{"prompt": "<s> the cat", "completion": "sat"}], bos_tok, 16)
    assert ex["input_ids"] == [BOS, the, cat, sat, EOS]


def test_an_eos_already_ending_the_completion_is_not_doubled(word_tok):
    (ex,) = tokenize_sft([{"prompt": "the cat", "completion": "sat </s>\n"}], word_tok, 16)
    the, cat, sat = ids(word_tok, "the cat sat")
    assert ex["input_ids"] == [the, cat, sat, EOS]


# ------------------------------------------------------------------------------------------ truncation
ROW = {"prompt": "the cat", "completion": "sat on the mat"}  # 2 prompt tokens, 4 + EOS completion tokens


def test_truncation_error_names_the_row(word_tok):
    rows = [{"prompt": "a", "completion": "dog"}, ROW]
    with pytest.raises(DataError, match=r"^row 1: prompt \(2 tokens\) \+ response \(5 tokens\) exceeds max_length=6"):
        tokenize_sft(rows, word_tok, max_length=6, truncation="error")
    out = tokenize_sft(rows, word_tok, max_length=7, truncation="error")  # fits exactly
    assert len(out[1]["input_ids"]) == 7 and out.truncated == 0


def test_right_truncation_cuts_the_end_of_the_completion(word_tok):
    out = tokenize_sft([ROW], word_tok, max_length=5, truncation="right")
    the, cat, sat, on = ids(word_tok, "the cat sat on")
    assert out[0] == {"input_ids": [the, cat, sat, on, the], "labels": [X, X, sat, on, the]}  # no EOS: cut
    assert out.truncated == 1


def test_left_truncation_drops_the_start_of_the_prompt(word_tok, bos_tok):
    long = {"prompt": "the cat sat on the mat", "completion": "a dog"}
    on, the, mat, a, dog = ids(word_tok, "on the mat a dog")
    out = tokenize_sft([long], word_tok, max_length=6, truncation="left")
    assert out[0] == {"input_ids": [on, the, mat, a, dog, EOS], "labels": [X, X, X, a, dog, EOS]}
    assert out.truncated == 1
    # The BOS stays in front of what is kept of the prompt.
    out = tokenize_sft([long], bos_tok, max_length=6, truncation="left")
    assert out[0]["input_ids"] == [BOS, the, mat, a, dog, EOS]


def test_a_prompt_that_fills_the_context_is_an_error_even_under_truncation(word_tok, tmp_path):
    path = tmp_path / "sft.jsonl"
    lines = [{"prompt": "a", "completion": "dog"}, {"prompt": "the cat sat on the mat", "completion": "a"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    rows = load_rows(path)
    for max_length in (5, 6):  # prompt has 6 tokens: longer than, or exactly, the context
        for truncation in ("error", "right"):
            with pytest.raises(DataError) as e:
                tokenize_sft(rows, word_tok, max_length=max_length, truncation=truncation)
            assert str(e.value).startswith(f"{path} line 2: ")
            assert e.value.location == f"{path} line 2"
        assert "prompt alone has 6 tokens" in str(e.value) and e.value.field == "prompt"
    # Left truncation drops prompt tokens and keeps the whole completion: it fits once the completion does,
    # with one prompt token before it; a completion that alone fills the context is an error.
    assert len(tokenize_sft(rows, word_tok, 6, truncation="left")[1]["input_ids"]) == 6
    with pytest.raises(DataError, match=r"^row 0: response alone has 5 tokens; left truncation"):
        tokenize_sft([ROW], word_tok, max_length=5, truncation="left")


def test_errors_name_the_source_row_after_reordering(word_tok):
    rows = load_rows([ROW, {"prompt": "a", "completion": "dog"}])
    rows.reverse()
    with pytest.raises(DataError, match=r"^rows\[0\]: prompt \(2 tokens\)"):
        tokenize_sft(rows, word_tok, max_length=4, truncation="error")


def test_rows_not_from_load_rows_are_validated(word_tok):
    with pytest.raises(DataError, match=r"^row 1: field 'completion': is empty$"):
        tokenize_sft([ROW, {"prompt": "a", "completion": ""}], word_tok, 16)
    with pytest.raises(DataError, match=r"^row 0: field 'chosen': must be a string, got list"):
        tokenize_preferences([{"prompt": "a", "chosen": ["dog"], "rejected": "cat"}], word_tok, 16)


def test_bad_arguments(word_tok):
    with pytest.raises(ValueError, match="truncation must be one of"):
        tokenize_sft([ROW], word_tok, 16, truncation="middle")
    with pytest.raises(ValueError, match="max_length must be an int >= 2"):
        tokenize_sft([ROW], word_tok, 1)
    with pytest.raises(ValueError, match="no rows"):
        tokenize_sft([], word_tok, 16)


# ----------------------------------------------------------------------------------------------- chat
CHAT = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]}


def test_chat_rows_use_the_template(word_tok):
    # The tiny tokenizer's template is "{role}: {content}\n" with "assistant:" as the generation prompt.
    (ex,) = tokenize_sft([CHAT], word_tok, 16)
    user, hello, assistant, world = ids(word_tok, "user: hello assistant: world")
    assert ex == {"input_ids": [user, hello, assistant, world, EOS], "labels": [X, X, X, world, EOS]}


def test_chat_template_that_closes_the_turn_with_eos(word_tok):
    tok = copy.deepcopy(word_tok)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} </s>\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    (ex,) = tokenize_sft([CHAT], tok, 16)
    user, hello, assistant, world = ids(word_tok, "user: hello assistant: world")
    assert ex["input_ids"] == [user, hello, EOS, assistant, world, EOS]  # one EOS after "world", not two
    assert ex["labels"] == [X, X, X, X, world, EOS]


def test_chat_default_format_without_a_template(word_tok):
    tok = copy.deepcopy(word_tok)
    tok.chat_template = None
    assert tokenize_sft([CHAT], tok, 16) == tokenize_sft([CHAT], word_tok, 16)  # same format by design


def test_chat_template_that_cannot_be_split_names_the_row(word_tok):
    tok = copy.deepcopy(word_tok)
    tok.chat_template = ("{% if add_generation_prompt %}be {% endif %}"
                         "{% for m in messages %}{{ m['content'] }} {% endfor %}")
    with pytest.raises(DataError, match=r"^rows\[0\]: field 'messages': the chat template"):
        tokenize_sft(load_rows([CHAT]), tok, 16)


# -------------------------------------------------------------------------------------------- preferences
PAIR = {"prompt": "the cat", "chosen": "sat on the mat", "rejected": "ran"}


def test_preferences_hand_checked(word_tok):
    (ex,) = tokenize_preferences([PAIR], word_tok, max_length=16)
    the, cat, sat, on, mat, ran = ids(word_tok, "the cat sat on mat ran")
    assert ex == {"prompt_ids": [the, cat], "chosen_ids": [sat, on, the, mat, EOS], "rejected_ids": [ran, EOS]}


def test_preference_truncation(word_tok):
    with pytest.raises(DataError, match=r"^row 0: prompt \(2 tokens\) \+ response \(5 \+ 2 tokens\) exceeds"):
        tokenize_preferences([PAIR], word_tok, max_length=6, truncation="error")
    the, cat, sat, on, ran = ids(word_tok, "the cat sat on ran")
    out = tokenize_preferences([PAIR], word_tok, max_length=4, truncation="right")
    assert out[0] == {"prompt_ids": [the, cat], "chosen_ids": [sat, on], "rejected_ids": [ran, EOS]}
    # Left: the longer response (5 tokens) decides how much prompt is kept.
    out = tokenize_preferences([PAIR], word_tok, max_length=6, truncation="left")
    assert out[0]["prompt_ids"] == [cat] and out.truncated == 1
    with pytest.raises(DataError, match="prompt alone has 2 tokens"):
        tokenize_preferences([PAIR], word_tok, max_length=2, truncation="right")


def test_fit_truncation_never_stops_on_length_and_counts_what_it_cut(word_tok):
    # "fit" (the default): prompt from the left to max_prompt_length (its BOS kept), then responses from the
    # right to fit max_length; a prompt that fills the context gives up half of it; nothing raises for length
    the, cat, sat, on, mat, a = ids(word_tok, "the cat sat on mat a")
    rows = [{"prompt": "a", "completion": "dog"}, ROW]  # row 1: 2 prompt + 5 completion tokens
    out = tokenize_sft(rows, word_tok, max_length=6)
    assert out[1]["input_ids"] == [the, cat, sat, on, the, mat] and out.truncated == 1  # EOS cut with the end
    out = tokenize_sft(rows, word_tok, max_length=6, max_prompt_length=1)
    assert out[1]["input_ids"] == [cat, sat, on, the, mat, EOS] and out.truncated == 1
    long_prompt = {"prompt": "the cat sat on the mat", "completion": "a"}  # 6 prompt tokens
    out = tokenize_sft([long_prompt], word_tok, max_length=4)
    assert out[0]["input_ids"] == [the, mat, a, EOS] and out.truncated == 1
    # a pair the cut leaves without a difference is dropped and counted, not an error
    pairs = [PAIR, {"prompt": "the cat", "chosen": "sat on the mat", "rejected": "sat on a dog"}]
    out = tokenize_preferences(load_rows(pairs), word_tok, max_length=4)
    assert len(out) == 1 and out.skipped == 1 and out.truncated == 2 and out.locations == ["rows[0]"]
    assert out[0]["chosen_ids"] == [sat, on] and out[0]["rejected_ids"] == ids(word_tok, "ran") + [EOS]
    with pytest.raises(ValueError, match="max_prompt_length must be an int >= 1"):
        tokenize_sft(rows, word_tok, max_length=6, max_prompt_length=0)


def test_a_pair_identical_after_truncation_is_an_error(word_tok):
    pair = {"prompt": "the cat", "chosen": "sat on the mat", "rejected": "sat on a dog"}
    with pytest.raises(DataError, match=r"^row 0: field 'rejected': is identical to 'chosen' after truncation"):
        tokenize_preferences([pair], word_tok, max_length=4, truncation="right")
    assert len(tokenize_preferences([pair], word_tok, max_length=5, truncation="right")) == 1


def test_preferences_from_hh_rlhf_rows(word_tok):
    prompt = "\n\nHuman: hello\n\nAssistant:"
    rows = load_rows([{"chosen": prompt + " world", "rejected": prompt + " a dog"}])
    (ex,) = tokenize_preferences(rows, word_tok, 16)
    world, a, dog = ids(word_tok, "world a dog")
    assert ex["chosen_ids"] == [world, EOS] and ex["rejected_ids"] == [a, dog, EOS]


def test_gsm8k_rows_train_sft_as_a_question_and_its_answer(word_tok, tmp_path):
    """GSM8K rows ({"question", "answer"}) are a user turn and the assistant's answer, whether raw or as
    load_rows returns them ({"prompt", "answer"}); the same as the equivalent chat rows."""
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps({"question": "the cat", "answer": "a dog #### 2"}) + "\n")
    loaded = load_rows(path)
    assert list(loaded) == [{"prompt": "the cat", "answer": "a dog #### 2"}]
    chat = {"messages": [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "a dog #### 2"}]}
    want = tokenize_sft([chat], word_tok, 32)
    assert tokenize_sft(loaded, word_tok, 32) == want
    assert tokenize_sft([{"question": "the cat", "answer": "a dog #### 2"}], word_tok, 32) == want
    user, assistant = ids(word_tok, "user: assistant:")
    assert want[0]["input_ids"][0] == user and assistant in want[0]["input_ids"]
    with pytest.raises(DataError, match="answer"):
        tokenize_sft([{"prompt": "the cat", "answer": " "}], word_tok, 32)
