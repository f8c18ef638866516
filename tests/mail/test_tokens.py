"""Signed link tokens and key rotation: links are signed with the current key only, and the old
keys still verify the links already sent."""

from __future__ import annotations

from mail.tokens import Tokens

OLD, NEW, OLDER = "o" * 32, "n" * 32, "p" * 32
DELIVERY = "d-1"


def test_rotated_keys_still_verify_links_already_sent() -> None:
    before = Tokens(OLD)
    after = Tokens(NEW, [OLDER, OLD])
    sent = [before.open_token(DELIVERY), before.click_token(DELIVERY, 3)]
    unsubscribe = before.unsubscribe_token(DELIVERY)
    assert after.read_open(sent[0]) == DELIVERY
    assert after.read_click(sent[1]).link_index == 3  # type: ignore[union-attr]
    assert after.read_unsubscribe(unsubscribe) == DELIVERY
    # New links are signed with the new key alone: the old key cannot make or read them.
    assert after.unsubscribe_token(DELIVERY) == Tokens(NEW).unsubscribe_token(DELIVERY)
    assert before.read_unsubscribe(after.unsubscribe_token(DELIVERY)) is None
    # Once an old key is dropped, its links stop verifying.
    assert Tokens(NEW, [OLDER]).read_unsubscribe(unsubscribe) is None
    assert Tokens(NEW).read_unsubscribe(unsubscribe) is None
