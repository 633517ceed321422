"""BIGRec's Alpaca-style prompt and the token/label layout used to fine-tune on it.

Text follows the authors' data notebook (`data/game/process.ipynb`) with the domain words
made generic ("items ... bought" instead of "video games ... played"): the history is a
list of quoted titles after a fixed sentence, the response is the next item's quoted title.
The authors' training template has one trailing space after "...the request." and their
inference template two (a slip); we use the training template for both.
"""

from __future__ import annotations

from typing import Any

from bench.train.lora_trainer import IGNORE_INDEX, TrainExample

INSTRUCTION = (
    "Given a list of items the user has bought before, please recommend a new item "
    "that the user likes to the user."
)
HISTORY_LEAD = "The user has bought the following items before:"
TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request. \n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


def shorten_title(title: str, max_words: int) -> str:
    """First `max_words` words of a title (0 = whole title), whitespace collapsed."""
    words = title.split()
    return " ".join(words[:max_words] if max_words > 0 else words)


def quote(title: str) -> str:
    return f'"{title}"'


def unquote(text: str) -> str:
    """What grounding embeds: the whole decoded response with double quotes stripped from both
    ends, as the authors' evaluate.py (`predict[0].strip('"')`); nothing else is cut."""
    return text.strip('"')


def history_input(titles: list[str]) -> str:
    # The authors write the first title straight after the colon and end the input with "\n ".
    return HISTORY_LEAD + ", ".join(quote(t) for t in titles) + "\n "


def build_prompt(history_titles: list[str]) -> str:
    """The prompt up to and including "### Response:\\n"; the model continues with a title."""
    return TEMPLATE.format(instruction=INSTRUCTION, input=history_input(history_titles))


def build_response(target_title: str) -> str:
    return quote(target_title)


def encode_example(
    tokenizer: Any, prompt: str, response: str, loss: str = "response", max_length: int = 0
) -> TrainExample:
    """Prompt and response tokenised separately, then joined, then EOS.

    Separate tokenisation keeps the prompt's tokens identical to what generation sees.
    loss="response": labels only on response + EOS (the Alpaca-LoRA `train_on_inputs=False`);
    loss="all_tokens": labels on every token, as BIGRec's published runs (`train_on_inputs=True`).
    max_length > 0 cuts the prompt from the left so the response always survives.
    """
    if loss not in ("response", "all_tokens"):
        raise ValueError(f"loss must be 'response' or 'all_tokens', got {loss!r}")
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if max_length > 0 and len(prompt_ids) + len(response_ids) > max_length:
        prompt_ids = prompt_ids[-max(1, max_length - len(response_ids)):]
    ids = prompt_ids + response_ids
    if loss == "all_tokens":
        labels = list(ids)
    else:
        labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    return TrainExample(ids, labels)
