"""Incoming rules: what they are, how they are read and checked, and how they decide about one mail. Pure.

A rule set is an ordered list. Each rule may be limited to accounts, has a condition tree (all-of /
any-of groups of conditions on the mail) and actions (title, fields, tags, archive only the
attachments or not at all, another after-archive action); ``stop`` ends evaluation for that mail.
The format (a JSON list, one object per rule) is what ``rules export`` writes and ``rules load``
reads:

    {"name": "Kreditoren", "accounts": ["buchhaltung"],
     "when": {"all": [{"field": "from", "op": "ends_with", "value": "@lieferant.ch"},
                      {"field": "subject", "op": "regex", "value": "Rechnung (?P<nr>\\\\d{4}-\\\\d+)"}]},
     "then": [{"set": "title", "value": "Rechnung {nr} von {from_name}"},
              {"set": "field:Rechnungsnummer", "value": "{nr}"}, {"tag": "Kreditoren"}],
     "stop": true}

``evaluate`` never raises: a rule that fails (a template naming what is not there, a regular
expression that runs out of time) makes the mail be filed as if no rule had matched, with the
reason recorded, so a rule can never lose a mail.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from .errors import ConfigError, escaped, t

TEXT_FIELDS = ("from", "to", "cc", "subject", "body", "folder", "account", "attachment_name", "attachment_type")
NUMBER_FIELDS = ("size",)
FLAG_FIELDS = ("has_attachment",)
ADDRESS_FIELDS = ("from", "to", "cc")
_ADDRESS = re.compile(r"[^\s<>,;:\"()\[\]]+@[^\s<>,;:\"()\[\]]+")  # the addresses in an address header
OPS = ("contains", "equals", "starts_with", "ends_with", "regex", "gt", "lt")
ARCHIVE_MODES = ("all", "attachments-only", "skip")
REGEX_TIMEOUT = 0.05  # seconds per regular expression and mail: a pattern that backtracks forever cannot hang the import
SEEN_MAX = 200  # how much of a value the simulator shows


@dataclass(frozen=True)
class Condition:
    """``field`` (one of the fields, or ``header:NAME``) ``op`` ``value``."""

    field: str
    op: str
    value: Any

    def describe(self) -> str:
        value = f"'{self.value}'" if isinstance(self.value, str) else str(self.value).lower()
        return f"{self.field} {self.op} {value}"


@dataclass(frozen=True)
class Group:
    """All or any of its items (conditions or groups)."""

    mode: str  # "all" | "any"
    items: tuple[Condition | Group, ...]


@dataclass(frozen=True)
class Action:
    """``set`` title or field:NAME to a template, ``tag`` NAME, ``archive`` a mode, ``after`` an action, ``send``
    a mail template to "sender" or an address through an SMTP account (``via``), in ``lang``."""

    kind: str  # set | tag | archive | after | send
    target: str = ""  # set: "title" or "field:NAME"; send: "sender" or an address
    value: str = ""  # send: the template
    via: str = ""
    lang: str = ""


@dataclass(frozen=True)
class Rule:
    name: str
    when: Group
    then: tuple[Action, ...]
    accounts: tuple[str, ...] | None = None  # None: every account
    stop: bool = False


# -- reading and writing --------------------------------------------------------------------------------


def load_rules(data: Any) -> list[Rule]:
    """Rules from their JSON form; raises ConfigError naming the rule and the part at fault."""
    if not isinstance(data, list):
        raise ConfigError(t("A rules file is a JSON list with one object per rule."))
    rules, names = [], set()
    for n, item in enumerate(data, 1):
        where = f"rule {n}"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise ConfigError(t("Rule %(n)s: each rule is an object with a \"name\".", n=n))
        name = item["name"].strip()
        where = name
        if name in names:
            raise ConfigError(t("Rule %(rule)s: the name is used twice.", rule=escaped(name)))
        names.add(name)
        unknown = set(item) - {"name", "accounts", "when", "then", "stop"}
        if unknown:
            raise ConfigError(t("Rule %(rule)s: unknown key(s) %(keys)s; a rule has name, accounts, when, then and "
                                "stop.", rule=escaped(where), keys=", ".join(sorted(unknown))))
        accounts = item.get("accounts")
        if accounts is not None and (not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts)):
            raise ConfigError(t("Rule %(rule)s: \"accounts\" is a list of account names (leave it out for all "
                                "accounts).", rule=escaped(where)))
        when = _group(item.get("when"), where)
        then = tuple(_action(a, where) for a in _list(item.get("then"), where, "then"))
        if not then:
            raise ConfigError(t("Rule %(rule)s: \"then\" names no action.", rule=escaped(where)))
        if not isinstance(item.get("stop", False), bool):
            raise ConfigError(t("Rule %(rule)s: \"stop\" is true or false.", rule=escaped(where)))
        rules.append(Rule(name, when, then, tuple(accounts) if accounts is not None else None,
                          item.get("stop", False)))
    return rules


def _list(value: Any, where: str, key: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(t("Rule %(rule)s: \"%(key)s\" is a list.", rule=escaped(where), key=key))
    return value


def _group(value: Any, where: str) -> Group:
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("all", "any"):
        raise ConfigError(t("Rule %(rule)s: a condition group is {\"all\": [...]} or {\"any\": [...]}.",
                            rule=escaped(where)))
    mode, items = next(iter(value.items()))
    return Group(mode, tuple(_group(i, where) if isinstance(i, dict) and set(i) <= {"all", "any"} and i
                             else _condition(i, where) for i in _list(items, where, mode)))


def _condition(value: Any, where: str) -> Condition:
    if not isinstance(value, dict) or set(value) != {"field", "op", "value"}:
        raise ConfigError(t("Rule %(rule)s: a condition is {\"field\": ..., \"op\": ..., \"value\": ...}.",
                            rule=escaped(where)))
    name, op, wanted = value["field"], value["op"], value["value"]
    if not isinstance(name, str) or not (name in TEXT_FIELDS + NUMBER_FIELDS + FLAG_FIELDS or
                                         (name.startswith("header:") and len(name) > 7)):
        raise ConfigError(t("Rule %(rule)s: the field '%(field)s' is not known. Use one of: %(fields)s, header:NAME.",
                            rule=escaped(where), field=escaped(str(name)),
                            fields=", ".join(TEXT_FIELDS + NUMBER_FIELDS + FLAG_FIELDS)))
    if op not in OPS:
        raise ConfigError(t("Rule %(rule)s: the operator '%(op)s' is not known. Use one of: %(ops)s.",
                            rule=escaped(where), op=escaped(str(op)), ops=", ".join(OPS)))
    if name in NUMBER_FIELDS:
        if op not in ("equals", "gt", "lt") or not isinstance(wanted, int) or isinstance(wanted, bool):
            raise ConfigError(t("Rule %(rule)s: %(field)s is compared with equals, gt or lt and a whole number.",
                                rule=escaped(where), field=name))
    elif name in FLAG_FIELDS:
        if op != "equals" or not isinstance(wanted, bool):
            raise ConfigError(t("Rule %(rule)s: %(field)s is compared with equals and true or false.",
                                rule=escaped(where), field=name))
    elif not isinstance(wanted, str) or op in ("gt", "lt"):
        raise ConfigError(t("Rule %(rule)s: %(field)s is compared with a text (contains, equals, starts_with, "
                            "ends_with, regex).", rule=escaped(where), field=escaped(name)))
    if op == "regex":
        import regex

        try:
            regex.compile(wanted)
        except regex.error as e:
            raise ConfigError(t("Rule %(rule)s: the regular expression '%(pattern)s' is not valid (%(reason)s).",
                                rule=escaped(where), pattern=escaped(wanted), reason=str(e))) from None
    return Condition(name, op, wanted)


def _action(value: Any, where: str) -> Action:
    if not isinstance(value, dict) or not value:
        raise ConfigError(t("Rule %(rule)s: an action is an object such as {\"tag\": \"Kreditoren\"}.",
                            rule=escaped(where)))
    if "set" in value:
        target = value["set"]
        if set(value) != {"set", "value"} or not isinstance(value["value"], str) or not isinstance(target, str) or \
                not (target == "title" or (target.startswith("field:") and target[6:].strip())):
            raise ConfigError(t("Rule %(rule)s: set is {\"set\": \"title\" or \"field:NAME\", \"value\": TEMPLATE}.",
                                rule=escaped(where)))
        _check_template(value["value"], where)
        return Action("set", target if target == "title" else f"field:{target[6:].strip()}", value["value"])
    if set(value) == {"tag"} and isinstance(value["tag"], str) and value["tag"].strip():
        return Action("tag", value=value["tag"].strip())
    if set(value) == {"archive"} and value["archive"] in ARCHIVE_MODES:
        return Action("archive", value=value["archive"])
    if set(value) == {"after"} and isinstance(value["after"], str):
        from .accounts import AfterAction

        return Action("after", value=str(AfterAction.parse(value["after"])))
    if "send" in value:
        return _send_action(value, where)
    raise ConfigError(t("Rule %(rule)s: the action %(action)s is not known. Use set, tag, archive (all, "
                        "attachments-only, skip), after or send.", rule=escaped(where), action=escaped(str(value))))


def _send_action(value: dict, where: str) -> Action:
    """{"send": TEMPLATE, "to": "sender" or ADDRESS, "via": SMTPNAME, "lang": "de" or "en"}."""
    from .compose import LANGS, TEMPLATE_NAME, check_address

    if not set(value) <= {"send", "to", "via", "lang"} or not all(isinstance(value.get(k, ""), str) for k in value) \
            or not TEMPLATE_NAME.match(value["send"]) or not value.get("via", "").strip() \
            or value.get("lang", "de") not in LANGS:
        raise ConfigError(t("Rule %(rule)s: send is {\"send\": TEMPLATE, \"to\": \"sender\" or an address, \"via\": "
                            "SMTP account, \"lang\": \"de\" or \"en\"}.", rule=escaped(where)))
    to = value.get("to", "sender").strip()
    if to != "sender":
        to = check_address(to, f"rule {where}")
    return Action("send", target=to, value=value["send"], via=value["via"].strip(), lang=value.get("lang", "de"))


def _check_template(template: str, where: str) -> None:
    try:
        list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(t("Rule %(rule)s: the template '%(text)s' is not valid (%(reason)s).",
                            rule=escaped(where), text=escaped(template), reason=str(e))) from None


def dump_rules(rules: Iterable[Rule]) -> list[dict]:
    """The JSON form of rules (what load_rules reads)."""
    def group(g: Group) -> dict:
        return {g.mode: [group(i) if isinstance(i, Group) else
                         {"field": i.field, "op": i.op, "value": i.value} for i in g.items]}

    def action(a: Action) -> dict:
        if a.kind == "set":
            return {"set": a.target, "value": a.value}
        if a.kind == "send":
            return {"send": a.value, "to": a.target, "via": a.via, "lang": a.lang}
        return {a.kind: a.value}

    out = []
    for r in rules:
        item: dict[str, Any] = {"name": r.name}
        if r.accounts is not None:
            item["accounts"] = list(r.accounts)
        item.update({"when": group(r.when), "then": [action(a) for a in r.then], "stop": r.stop})
        out.append(item)
    return out


# -- the mail as rules see it ------------------------------------------------------------------------


@dataclass
class MailFacts:
    """What conditions look at and templates fill in. ``headers`` is read only when a rule asks for one."""

    account: str
    folder: str
    size: int
    from_: str = ""
    to: str = ""
    cc: str = ""
    subject: str = ""
    body: str = ""
    date: str | None = None
    attachments: list[tuple[str, str]] = field(default_factory=list)  # (file name, sniffed type)
    headers: Callable[[], Mapping[str, list[str]]] = lambda: {}

    def value(self, name: str) -> Any:
        if name.startswith("header:"):
            return "\n".join(self._headers().get(name[7:].lower(), []))
        if name == "from":
            return self.from_
        if name == "size":
            return self.size
        if name == "has_attachment":
            return bool(self.attachments)
        if name == "attachment_name":
            return "\n".join(n for n, _ in self.attachments)
        if name == "attachment_type":
            return "\n".join(ty for _, ty in self.attachments)
        return getattr(self, name)

    def text(self, name: str) -> str:
        """A text field's value, worked out once per mail."""
        cache = self.__dict__.setdefault("_text_cache", {})
        found = cache.get(name)
        if found is None:
            found = cache[name] = str(self.value(name))
        return found

    def lines(self, name: str) -> list[str]:
        """What text operators compare, lower-cased, worked out once per mail and field: a multi-valued field
        (attachment names) holds if one of its lines does, an address field if its whole text or one of its
        addresses does (ends_with "@lieferant.ch")."""
        cache = self.__dict__.setdefault("_lines_cache", {})
        found = cache.get(name)
        if found is None:
            text = self.text(name)
            if name.startswith("attachment_"):
                found = text.lower().split("\n")
            elif name in ADDRESS_FIELDS:
                lowered = text.lower()
                found = [lowered, *_ADDRESS.findall(lowered)]
            else:
                found = [text.lower()]
            cache[name] = found
        return found

    def _headers(self) -> Mapping[str, list[str]]:
        cached = self.__dict__.get("_header_cache")
        if cached is None:
            cached = {k.lower(): v for k, v in self.headers().items()}
            self.__dict__["_header_cache"] = cached
        return cached

    def placeholders(self) -> dict[str, Any]:
        """The template placeholders: {subject}, {from_address}, {from_name}, {to}, {date:%Y-%m}, ..."""
        name, address = (getaddresses([self.from_]) or [("", "")])[0]
        try:
            date: Any = parsedate_to_datetime(self.date) if self.date else None
        except (TypeError, ValueError):
            date = None
        if date is None and self.date:
            try:
                date = datetime.fromisoformat(self.date.replace("Z", "+00:00"))
            except ValueError:
                date = None
        return {"subject": self.subject, "from": self.from_, "from_address": address, "from_name": name or address,
                "to": self.to, "cc": self.cc, "account": self.account, "folder": self.folder,
                "date": date or "", "size": self.size}


def facts_of(raw: Any, plans: list[Any]) -> MailFacts:
    """The facts of a mail from its raw message and its document plans (plan.plan_documents): the mail is the
    first plan; every attachment, forwarded mails' included, counts for has_attachment and the attachment fields."""
    mail = plans[0]
    attachments = [(p.filename or p.title or "", p.mime_type or "") for p in plans[1:] if p.kind == "attachment"
                   and not p.inline]
    size = raw.spool.size if getattr(raw, "spool", None) is not None else len(raw.raw)

    def headers() -> dict[str, list[str]]:
        """The header block, unfolded, by lower-case name; values decoded (RFC 2047, raw 8-bit) as mime does."""
        from .mime import decode_header_text
        from .spool import read_head

        head = read_head(raw.content, 262144)
        end = head.find(b"\r\n\r\n")
        end = end if end >= 0 else head.find(b"\n\n")
        text = (head[:end] if end >= 0 else head).decode("ascii", "surrogateescape")
        out: dict[str, list[str]] = {}
        defects: list[str] = []
        for line in _FOLD.sub(" ", text).splitlines():
            key, colon, value = line.partition(":")
            if colon and key.strip():
                out.setdefault(key.strip().lower(), []).append(decode_header_text(value.strip(), defects, key))
        return out

    return MailFacts(account=raw.account, folder=raw.folder, size=size, from_=mail.from_ or "", to=mail.to or "",
                     cc=mail.cc or "", subject=mail.subject or "", body=mail.text or "", date=mail.date,
                     attachments=attachments, headers=headers)


def apply_outcome(plans: list[Any], outcome: Outcome) -> list[Any]:
    """The document plans as the rules decided: [] when the mail is not to be archived; the mail plan with its
    title, fields and tags, hidden from lists when only its attachments are wanted."""
    if outcome.archive == "skip":
        return []
    mail = plans[0]
    if outcome.title:
        mail.title = outcome.title
    mail.fields = dict(outcome.fields)
    mail.tags = list(outcome.tags)
    mail.hidden = outcome.archive == "attachments-only"
    mail.after = outcome.after
    mail.sends = [s for s in outcome.sends if not s["refused"]]
    return plans


_FOLD = re.compile(r"\r?\n(?=[ \t])")  # a header line's continuation


# -- evaluation ---------------------------------------------------------------------------------------


@dataclass
class Check:
    """One condition as the simulator shows it: what it asked, what it saw, whether it held."""

    condition: str
    result: bool
    seen: str


@dataclass
class RuleTrace:
    rule: str
    matched: bool
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    skipped_for_account: bool = False


@dataclass
class Outcome:
    """What the rules decided for one mail (all defaults when none matched or one failed)."""

    title: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    archive: str = "all"
    after: str | None = None
    # automatic mails: {"rule", "template", "to", "via", "lang", "refused": why not (loop protection) or None}
    sends: list[dict[str, Any]] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    trace: list[RuleTrace] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.title or self.fields or self.tags or self.archive != "all" or self.after or self.sends)


class RuleFailed(Exception):
    """A rule could not be applied to this mail (its template or regular expression); the mail is filed as if no
    rule had matched."""


class _Template(string.Formatter):
    """str.format with plain names only: {subject}, {date:%Y-%m}, {nr}, {1}; no attributes, no indexing."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if not field_name.isidentifier() and not field_name.isdigit():
            raise RuleFailed(f"the placeholder {{{field_name}}} is not a plain name")
        return self.get_value(int(field_name) if field_name.isdigit() else field_name, args, kwargs), field_name

    def get_value(self, key: Any, args: Any, kwargs: Any) -> Any:
        if isinstance(key, int):
            if key < len(args) and args[key] is not None:
                return args[key]
            raise RuleFailed(f"no regular expression group {key} matched for {{{key}}}")
        if key in kwargs:
            return kwargs[key]
        raise RuleFailed(f"the placeholder {{{key}}} is not known")


def fill(template: str, values: Mapping[str, Any], groups: list[Any]) -> str:
    """A template filled in; raises RuleFailed naming the placeholder at fault."""
    try:
        return _Template().vformat(template, [None, *groups], values).strip()
    except RuleFailed:
        raise
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise RuleFailed(f"the template '{template}' cannot be filled ({e})") from e


def evaluate(rules: Iterable[Rule], facts: MailFacts, timeout: float = REGEX_TIMEOUT, trace: bool = True) -> Outcome:
    """Run the rules over one mail, in order. Never raises. ``trace``: record each condition with the value it
    saw (the simulator shows them; the import does without)."""
    outcome = Outcome()
    for rule in rules:
        traced = RuleTrace(rule.name, False)
        if trace:
            outcome.trace.append(traced)
        if rule.accounts is not None and facts.account not in rule.accounts:
            traced.skipped_for_account = True
            continue
        state: list[Any] = [None, None]  # a regular expression's named groups and groups, when one matched
        try:
            traced.matched = _matcher(rule, timeout)(facts, state, traced.checks if trace else None)
            if not traced.matched:
                continue
            _act(rule, outcome, facts, state[0] or {}, state[1] or [])
        except RuleFailed as e:
            traced.error = str(e)
            return Outcome(trace=outcome.trace, errors=[f"rule {rule.name}: {e}; the mail was filed as if no rule "
                                                        "had matched"])
        outcome.matched.append(rule.name)
        if rule.stop:
            break
    return outcome


def _act(rule: Rule, outcome: Outcome, facts: MailFacts, captured: dict[str, Any], groups: list[Any]) -> None:
    """A matched rule's actions on the outcome; raises RuleFailed for a template that cannot be filled."""
    filled = {**facts.placeholders(), **captured} if any(a.kind == "set" for a in rule.then) else {}
    for action in rule.then:
        if action.kind == "set":
            text = fill(action.value, filled, groups)
            if action.target == "title":
                outcome.title = text
            else:
                outcome.fields[action.target[6:]] = text
        elif action.kind == "tag":
            if action.value not in outcome.tags:
                outcome.tags.append(action.value)
        elif action.kind == "archive":
            outcome.archive = action.value
        elif action.kind == "after":
            outcome.after = action.value
        elif action.kind == "send":
            outcome.sends.append(_send(rule, action, facts))


def _send(rule: Rule, action: Action, facts: MailFacts) -> dict[str, Any]:
    """An automatic mail a rule asks for, with the reason it must not go out (RFC 3834 loop protection)."""
    from .compose import NO_REPLY_LOCAL, auto_reply_refusal, check_address
    from .conversation import addresses
    from .errors import ConfigError

    senders = addresses(facts.from_)
    sender = next(iter(senders)) if len(senders) == 1 else ""
    to = sender if action.target == "sender" else action.target.lower()
    refused = auto_reply_refusal(facts._headers(), facts.from_)
    if refused is None:
        try:
            check_address(to, "the automatic reply's recipient")
        except ConfigError:
            refused = "the recipient's address is not usable"
    if refused is None and NO_REPLY_LOCAL.match(to.partition("@")[0]):
        refused = f"the recipient {to} is a no-reply or system address"
    return {"rule": rule.name, "template": action.value, "to": to, "via": action.via, "lang": action.lang or "de",
            "from": sender, "refused": refused}


# A compiled condition tree: (facts, regex state, checks or None) -> whether it holds. With a checks list each
# condition asked is recorded there with the value it saw (short-circuiting as the import does).
Matcher = Callable[[MailFacts, list[Any], "list[Check] | None"], bool]
_MATCHERS: dict[int, tuple[Rule, float, Matcher]] = {}


def _matcher(rule: Rule, timeout: float) -> Matcher:
    """The rule's condition tree as one function, compiled on first use (rules reach the parse worker pickled,
    so the cache is by object, the rule kept in it so its id stays its own)."""
    hit = _MATCHERS.get(id(rule))
    if hit is not None and hit[0] is rule and hit[1] == timeout:
        return hit[2]
    if len(_MATCHERS) > 4096:
        _MATCHERS.clear()
    compiled = _compile_group(rule.when, timeout)
    _MATCHERS[id(rule)] = (rule, timeout, compiled)
    return compiled


def _compile_group(group: Group, timeout: float) -> Matcher:
    parts = [_compile_group(i, timeout) if isinstance(i, Group) else _compile_condition(i, timeout)
             for i in group.items]
    if len(parts) == 1:
        return parts[0]
    if group.mode == "all":
        def every(f: MailFacts, st: list[Any], checks: list[Check] | None) -> bool:
            for part in parts:
                if not part(f, st, checks):
                    return False
            return True
        return every

    def some(f: MailFacts, st: list[Any], checks: list[Check] | None) -> bool:
        for part in parts:
            if part(f, st, checks):
                return True
        return False
    return some


def _compile_condition(c: Condition, timeout: float) -> Matcher:
    test = _compile_test(c, timeout)
    name = c.field

    def checked(f: MailFacts, st: list[Any], checks: list[Check] | None) -> bool:
        if checks is None:
            return test(f, st)
        try:
            ok = test(f, st)
        except RuleFailed:
            checks.append(Check(c.describe(), False, _shown(f.value(name))))
            raise
        checks.append(Check(c.describe(), ok, _shown(f.value(name))))
        return ok
    return checked


def _compile_test(c: Condition, timeout: float) -> Callable[[MailFacts, list[Any]], bool]:
    name, op, wanted = c.field, c.op, c.value
    if name in NUMBER_FIELDS or name in FLAG_FIELDS:
        compare = {"equals": lambda v: v == wanted, "gt": lambda v: v > wanted, "lt": lambda v: v < wanted}[op]
        return lambda f, st: compare(f.value(name))
    if op == "regex":
        pattern = _compiled(wanted)

        def search(f: MailFacts, st: list[Any]) -> bool:
            try:
                match = pattern.search(f.text(name), timeout=timeout)
            except TimeoutError:
                raise RuleFailed(f"the regular expression {wanted!r} took longer than {timeout:g} s on "
                                 f"{name}") from None
            if match is None:
                return False
            st[0] = {**(st[0] or {}), **{k: v for k, v in match.groupdict().items() if v is not None}}
            st[1] = list(match.groups())
            return True
        return search
    w = str(wanted).lower()
    ws = w.strip()
    single = not (name in ADDRESS_FIELDS or name.startswith("attachment_"))
    if op == "contains":
        if single:
            return lambda f, st: w in f.lines(name)[0]
        return lambda f, st: any(w in line for line in f.lines(name))
    if op == "equals":
        return lambda f, st: any(line.strip() == ws for line in f.lines(name))
    if op == "starts_with":
        return lambda f, st: any(line.startswith(w) for line in f.lines(name))
    return lambda f, st: any(line.rstrip().endswith(w) for line in f.lines(name))


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str) -> Any:
    import regex

    return regex.compile(pattern, flags=regex.IGNORECASE | regex.MULTILINE)


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= SEEN_MAX else text[:SEEN_MAX] + "…"
