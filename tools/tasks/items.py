"""Byte-level vocabulary and the task item: a context followed by questions, each answered and closed by EOS.

Token sequence of an item (ids):

    BOS  context-bytes  SEP  q_1 a_1 EOS  q_2 a_2 EOS  ...  q_n a_n EOS

The prompt is everything up to and including q_n; the answer is a_n followed by EOS. Earlier questions are
answered in the prompt (teacher-forced), so an item with several questions still scores one answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BOS, EOS, PAD, SEP = 256, 257, 258, 259
VOCAB_SIZE = 260
SPECIALS = {"bos": BOS, "eos": EOS, "pad": PAD, "sep": SEP}


@dataclass(frozen=True)
class Item:
    task: str
    context: bytes
    questions: tuple[tuple[bytes, bytes], ...]  # (question, answer) pairs; the last one is scored
    meta: dict = field(default_factory=dict)

    def ids(self) -> list[int]:
        out = [BOS, *self.context, SEP]
        for question, answer in self.questions:
            out += [*question, *answer, EOS]
        return out

    def prompt_ids(self) -> list[int]:
        return self.ids()[: -len(self.answer_ids())]

    def answer_ids(self) -> list[int]:
        return [*self.questions[-1][1], EOS]

    def answer_spans(self) -> list[tuple[int, int]]:
        """[start, end) positions in ids() of every answer, EOS included."""
        spans = []
        pos = len(self.context) + 2
        for question, answer in self.questions:
            pos += len(question)
            spans.append((pos, pos + len(answer) + 1))
            pos += len(answer) + 1
        return spans


def question_tokens(questions: list[tuple[bytes, bytes]], *, count_last_answer: bool) -> int:
    """Tokens outside the context: BOS, SEP and the question/answer section."""
    n = 2 + sum(len(q) + len(a) + 1 for q, a in questions)
    return n if count_last_answer else n - len(questions[-1][1]) - 1
