"""Atlassian documents both ways: Omoi's comments written as ADF, an issue's read as text."""

from __future__ import annotations

from agents.delivery.jira import document, plain


def test_a_document_reads_back_as_its_text_a_paragraph_a_line() -> None:
    two = {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Limit "},
                                              {"type": "text", "text": "the API."}]},
            {"type": "paragraph", "content": [{"type": "text", "text": "Per client."}]},
        ],
    }  # fmt: skip
    assert plain(two) == "Limit the API.\nPer client."
    assert plain(document("Omoi took it.")).startswith("Omoi took it.")
    # Jira's older API (and some webhooks) send a plain string; none is empty.
    assert plain("as it is") == "as it is" and plain(None) == ""
    assert plain({"type": "doc", "content": [{"type": "rule"}]}) == ""
