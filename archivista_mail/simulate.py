"""The rules simulator: what the rules would do to mail, through the same parse, plan and rule steps as an import,
changing nothing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .archive import Archive
from .model import RawMail
from .pipeline import prepare_with_rules
from .rules import Rule


def simulate(rules: list[Rule], raws: Iterable[RawMail], sources: Iterable[str]) -> list[dict[str, Any]]:
    """For each mail: the rules' trace (conditions with the values they saw), the outcome and the documents."""
    out = []
    for raw, source in zip(raws, sources, strict=True):
        plans, outcome, facts = prepare_with_rules(raw, rules)
        mail = plans[0] if plans else None
        out.append({
            "source": source, "account": raw.account, "folder": raw.folder, "sha256": _sha(raw),
            "subject": facts.subject, "from": facts.from_,
            "matched": outcome.matched, "archive": outcome.archive, "after": outcome.after,
            "title": mail.title if mail else None, "fields": outcome.fields, "tags": outcome.tags,
            "sends": [{"would_send": not s["refused"], **s} for s in outcome.sends],
            "rules": [{"rule": tr.rule, "matched": tr.matched, "error": tr.error,
                       "skipped_for_account": tr.skipped_for_account,
                       "checks": [asdict(c) for c in tr.checks]} for tr in outcome.trace],
            "documents": [{"kind": p.kind, "title": p.title, "fields": p.fields, "tags": p.tags, "hidden": p.hidden}
                          for p in plans],
            "errors": outcome.errors,
        })
    return out


def _sha(raw: RawMail) -> str:
    from .archive.blobs import sha256_hex

    return raw.spool.sha256 if raw.spool is not None else sha256_hex(raw.raw)


def simulate_files(rules: list[Rule], path: Path, account: str) -> list[dict[str, Any]]:
    """The rules over .eml files, a directory of them, a maildir or an mbox file."""
    from .sources.files import iter_files

    raws = [RawMail(r.raw, account, r.folder, r.key, received=r.received) for r in iter_files(path)]
    return simulate(rules, raws, [r.folder for r in raws])  # the file (an mbox: the file and the message)


def simulate_archived(rules: list[Rule], archive: Archive, last: int, account: str | None) -> list[dict[str, Any]]:
    """The rules over the last archived mails (newest first), as they came from their accounts."""
    found: list[dict[str, Any]] = []
    offset = 0
    while len(found) < last:
        page = archive.list_documents(limit=200, offset=offset, kind="mail")
        if not page:
            break
        offset += len(page)
        found += [d for d in page if d.get("parent") is None and (account is None or d.get("account") == account)]
    found = found[:last]
    raws = [RawMail(archive.read_blob(d["number"]), d.get("account") or "", d.get("folder") or "",
                    f"archived:{d['number']}") for d in found]
    return simulate(rules, raws, [f"document {d['number']}" for d in found])
