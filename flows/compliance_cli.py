"""`unlearn requests | ledger | certificate | model retire | model import`: the request ledger, signed
certificates, taking a model out of production and bringing one in on the CLI.

flows/cli.py wires these in with `add_parsers(sub, model_import)` (the flow command's handler is its own) and `COMMANDS`. Every command returns an exit
code — 0 done, 1 a check failed or a problem was found (a broken chain, an altered certificate,
overdue requests under `--overdue`), 2 invalid input: one line on stderr, nothing written.
With --json, stdout carries exactly one JSON object. `requests submit` plans the request as
`forget` would (read-only: MLflow and the dataset) before the ledger records it; `model retire`
writes to MLflow; the other commands need neither Prefect nor MLflow.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from flows.numbers import real_number, whole_number
from flows.parser import Parser
from unlearning.compliance import deadlines
from unlearning.compliance import ledger as lg
from unlearning.errors import UnlearnError
from unlearning.numbers import as_written, whole_number_as_written

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


JSON_HELP = "print the result as one JSON object on stdout (progress and errors stay on stderr)"


def add_parsers(sub, model_import=None) -> None:
    """Register `requests`, `ledger` and `certificate` on the `unlearn` subparsers."""
    requests = sub.add_parser("requests", help="the erasure request ledger: submit, list, show, extend, deny")
    rsub = requests.add_subparsers(dest="requests_command", required=True)

    submit = rsub.add_parser("submit", help="validate a request file and record it as received, with its deadline")
    submit.add_argument("file", type=Path, help="request file (YAML or JSON, the same schema as `unlearn forget`)")
    submit.add_argument("--received", help="when the request arrived, ISO 8601 (default now; no zone = UTC)")
    submit.add_argument("--channel", help="how it was made: email, web-form, phone, mail, in-person, ci, ... "
                        "(default unspecified)")
    submit.add_argument("--deadline-days", help="answer within N days (45 for CCPA) instead of one calendar "
                        "month (GDPR art. 12(3))")
    submit.add_argument("--json", action="store_true", help=JSON_HELP)
    submit.set_defaults(handler=cmd_requests_submit)

    listing = rsub.add_parser("list", help="recorded requests with their state and deadline")
    listing.add_argument("--status", help=f"only this state: {', '.join(lg.STATUSES)}")
    listing.add_argument("--overdue", action="store_true", help="only unanswered requests past their deadline "
                         "(exit code 1 when there are any)")
    listing.add_argument("--json", action="store_true", help=JSON_HELP)
    listing.set_defaults(handler=cmd_requests_list)

    show = rsub.add_parser("show", help="one request's record and its ledger entries")
    show.add_argument("id", help="the request id")
    show.add_argument("--json", action="store_true", help=JSON_HELP)
    show.set_defaults(handler=cmd_requests_show)

    extend = rsub.add_parser("extend", help="extend an open request's deadline, with the reason the person was given")
    extend.add_argument("id", help="the request id")
    extend.add_argument("--reason", required=True, help="why the deadline is extended, as the person "
                        "was told (GDPR Art. 12(3)); recorded in the ledger (at most 500 characters, no personal value)")
    extend.add_argument("--until", help="new deadline YYYY-MM-DD (default: the latest the rule allows)")
    extend.add_argument("--json", action="store_true", help=JSON_HELP)
    extend.set_defaults(handler=cmd_requests_extend)

    deny = rsub.add_parser("deny", help="deny an open request, with the basis for the denial")
    deny.add_argument("id", help="the request id")
    deny.add_argument("--basis", required=True, help="the basis for the denial (recorded in the "
                      "ledger, CCPA §7101; at most 500 characters, no personal value)")
    deny.add_argument("--json", action="store_true", help=JSON_HELP)
    deny.set_defaults(handler=cmd_requests_deny)

    ledger = sub.add_parser("ledger", help="the request ledger's integrity")
    lsub = ledger.add_subparsers(dest="ledger_command", required=True)
    verify = lsub.add_parser("verify", help="check every entry's MAC and the signed head (needs the signing key); "
                             "exit 1 naming the first bad entry")
    verify.add_argument("--expect-head", metavar="SEQ:HASH", help="also a head recorded elsewhere (an entry number "
                        "and its MAC, as verify prints them)")
    verify.add_argument("--json", action="store_true", help=JSON_HELP)
    verify.set_defaults(handler=cmd_ledger_verify)
    seal = lsub.add_parser("seal", help="as the key holder, vouch for the ledger as it stands: key a format 1 "
                           "ledger with MACs, sign its head (refused when its chain is broken)")
    seal.add_argument("--expect-head", metavar="SEQ:HASH", help="seal only if this entry is still there")
    seal.add_argument("--json", action="store_true", help=JSON_HELP)
    seal.set_defaults(handler=cmd_ledger_seal)

    model = sub.add_parser("model", help="registered models")
    msub = model.add_subparsers(dest="model_command", required=True)
    retire = msub.add_parser("retire", help="take a model out of production for good: its `production` alias "
                             "removed, its model files and private state deleted (the registry keeps the record)")
    retire.add_argument("name", help="the registered model name")
    retire.add_argument("--json", action="store_true", help=JSON_HELP)
    retire.set_defaults(handler=cmd_model_retire)
    imported = msub.add_parser("import", help="register a Hugging Face causal LM fine-tuned elsewhere (a local "
                               "checkpoint) as the production model of a text dataset it was trained on")
    imported.add_argument("name", help="the registered model name")
    imported.add_argument("--from-pretrained", type=Path, required=True, metavar="DIR", help="the fine-tuned "
                          "checkpoint directory (config.json, weights, tokenizer; nothing is downloaded)")
    imported.add_argument("--dataset", required=True, help="the text dataset (data/NAME) it was trained on, as "
                          "checked out now: recorded as declared by you")
    imported.add_argument("--base", type=Path, metavar="DIR", help="the checkpoint it was fine-tuned from: "
                          "retraining (--verify reference, the audit, the fall-back of `auto`) fine-tunes it "
                          "again on the corrected data; without it, requests are verified by evidence only")
    # The schedule it was fine-tuned with: what retraining replays, so that the retrained reference is
    # the model it would be without the removed data (`exact`); with --base all four are required.
    imported.add_argument("--steps", type=whole_number, help="with --base: the Adam steps it was fine-tuned for")
    imported.add_argument("--lr", type=real_number, help="with --base: the Adam rate it was fine-tuned with")
    imported.add_argument("--batch", type=whole_number, help="with --base: the windows per step it was fine-tuned with")
    imported.add_argument("--seq-len", type=whole_number, help="the tokens per window it was fine-tuned on (default 64; "
                          "required with --base): the windows every check reads")
    imported.add_argument("--seed", type=whole_number, default=0, help="seed of retraining's batches (default 0)")
    imported.add_argument("--json", action="store_true", help=JSON_HELP)
    # a flow command: its handler is the CLI's (flows.train_cli.cmd_model_import), handed in so that
    # this module never imports the flow commands
    imported.set_defaults(handler=model_import or not_here)

    certificate = sub.add_parser("certificate", help="signed erasure certificates")
    csub = certificate.add_subparsers(dest="certificate_command", required=True)
    cverify = csub.add_parser("verify", help="check a certificate's (or an audit record's) HMAC signature, that it "
                              "is filed under its request's (audit's) id and is the one the ledger recorded (an audit "
                              "record: of an audit that finished); exit 1 otherwise")
    cverify.add_argument("path", type=Path, help="the certificate JSON file (.unlearn/certificates/ID.json) or audit "
                         "record (.unlearn/audits/ID.json)")
    cverify.add_argument("--json", action="store_true", help=JSON_HELP)
    cverify.set_defaults(handler=cmd_certificate_verify)


def dispatch(args, root: Path) -> int:
    return args.handler(args, root)


COMMANDS = {"requests": dispatch, "ledger": dispatch, "certificate": dispatch, "model": dispatch}


def one_line_errors(command):
    """UnlearnError → `error: ...` on stderr and exit code 2 (1 for a busy project), as in `unlearn`'s main."""
    @functools.wraps(command)
    def run(args, root) -> int:
        try:
            return command(args, Path(root))
        except UnlearnError as err:
            print(f"error: {err}", file=sys.stderr)
            return getattr(err, "exit_code", EXIT_INVALID)
    return run


def emit(args, payload: dict, human: str) -> None:
    """A command's result: one JSON object on stdout with --json, else its human lines."""
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        print(human)


# ---------------------------------------------------------------------------------------------
# requests


@one_line_errors
def cmd_requests_submit(args, root: Path) -> int:
    from tasks import ledger, steps
    from unlearning.compliance.requests import load_request

    request = load_request(args.file)  # the schema and the errors of `unlearn forget`
    days = _whole_days(args.deadline_days)
    now = deadlines.utc_now()
    if request.id not in ledger.records(root):  # a resubmission is answered by the ledger alone
        # the plan `forget` and `comply` make, read-only, before the ledger records anything: a
        # request that can never be processed is refused now, not recorded for good
        steps.plan_for(root, request)
    entry, created = ledger.record_request(root, request, args.received, args.channel, days, now=now)
    record = ledger.show(root, request.id)
    payload = {**record.to_dict(now), "created": created}
    if created:
        human = (f"request {record.id} received {record.received.isoformat()} via {record.channel} — deadline "
                 f"{record.deadline} ({record.policy.describe()}); ledger entry {entry.seq}")
    else:
        human = (f"request {record.id} was already recorded (received {record.received.isoformat()}, "
                 f"{record.status}, deadline {record.deadline}); nothing changed")
    emit(args, payload, human)
    return EXIT_OK


def _whole_days(value: str | int | None) -> int | None:
    if value is None:
        return None
    try:
        text = as_written(value)
        if not text.lstrip("+-").isdigit():  # a whole number: not '4.0' or '1e3'
            raise ValueError(text)
        return int(text)
    except ValueError:
        raise UnlearnError(f"--deadline-days must be a whole number of days, not '{value}'") from None


@one_line_errors
def cmd_requests_list(args, root: Path) -> int:
    from tasks import ledger

    now = deadlines.utc_now()
    found = ledger.list_requests(root, status=args.status, overdue=args.overdue, now=now)
    trust = ledger_trust(root)
    payload = {"requests": [r.to_dict(now) for r in found], "count": len(found), "now": deadlines.utc_iso(now),
               "status": args.status, "overdue_only": bool(args.overdue), "ledger": trust}
    emit(args, payload, format_list(found, now))
    warn_unless_verified(trust)
    return EXIT_FAILED if (args.overdue and found) or trust["verified"] is False else EXIT_OK


def ledger_trust(root: Path) -> dict:
    """{"verified": True/False, or None without the signing key, "message"}: whether what a listing
    shows is what the ledger's MACs and signed head vouch for. An entry rewritten in the database
    (a `denied` forged over a `received`, a deadline moved) reads like any other until checked."""
    from tasks import ledger_verify

    try:
        ok, _, message = ledger_verify.verify_chain(root)
    except UnlearnError as exc:  # no signing key here: the entries cannot be authenticated
        return {"verified": None, "message": f"not verified: {exc}"}
    return {"verified": ok, "message": message}


def warn_unless_verified(trust: dict) -> None:
    if trust["verified"] is False:
        print(f"warning: the ledger does not verify — {trust['message']}; what is shown may have been altered "
              "(see `unlearn ledger verify`)", file=sys.stderr)
    elif trust["verified"] is None:
        print(f"note: {trust['message']}", file=sys.stderr)


def format_list(found: list[lg.RequestRecord], now) -> str:
    if not found:
        return "no requests"
    header = ("id", "status", "received", "deadline", "due", "channel", "model", "kinds")
    rows = [(r.id, r.status, r.received.date().isoformat(), r.deadline.isoformat(), _due(r, now), r.channel,
             r.request["model"], ",".join(r.request["kinds"])) for r in found]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _due(record: lg.RequestRecord, now) -> str:
    if record.response is not None:
        return "answered late" if record.answered_late() else "answered"
    days = record.days_left(now)
    return f"OVERDUE {-days} d" if record.overdue(now) else f"{days} d left"


@one_line_errors
def cmd_requests_show(args, root: Path) -> int:
    from tasks import ledger

    now = deadlines.utc_now()
    record = ledger.show(root, args.id)
    trust = ledger_trust(root)
    emit(args, {**record.to_dict(now, with_entries=True), "ledger": trust}, format_record(record, now))
    warn_unless_verified(trust)
    return EXIT_FAILED if trust["verified"] is False else EXIT_OK


def format_record(r: lg.RequestRecord, now) -> str:
    nature = r.request
    lines = [
        f"request {r.id}: {r.status} ({_due(r, now)})",
        f"  received  {r.received.isoformat()} via {r.channel}",
        f"  deadline  {r.deadline} — {r.policy.describe()}",
        f"  model     {nature['model']} (method {nature['method']})",
        f"  asks for  {', '.join(nature['kinds'])}: {len(nature['delete_records'])} record(s) deleted, "
        f"{len(nature['revoke_features'])} feature(s) revoked, {len(nature['fix_labels'])} label(s) fixed"
        + (", redaction" if nature["redact"] else "")
        + (f", class {nature['forget_class']} forgotten" if nature.get("forget_class") is not None else ""),
    ]
    lines += [f"  extended  {x['date']} → {x['deadline']}: {x['reason']}" for x in r.extensions]
    if r.failure:
        lines.append(f"  failed    {r.failure['date']}: {r.failure['reason']}")
    if r.response:
        detail = r.response.get("basis") or r.response.get("response") or ""
        lines.append(f"  response  {r.response['status']} {r.response['date']}: {detail}")
    lines.append("  entries")
    lines += [f"    {e.seq:>5}  {e.at}  {e.event:<10} {e.hash[:16]}…" for e in r.entries]
    return "\n".join(lines)


@one_line_errors
def cmd_requests_extend(args, root: Path) -> int:
    from tasks import ledger

    now = deadlines.utc_now()
    entry = ledger.extend(root, args.id, lg.stated_text(args.reason, "--reason"), args.until, now=now)
    record = ledger.show(root, args.id)
    emit(args, record.to_dict(now), f"request {record.id}: deadline extended to {record.deadline} "
         f"(ledger entry {entry.seq})")
    return EXIT_OK


@one_line_errors
def cmd_requests_deny(args, root: Path) -> int:
    from tasks import ledger

    now = deadlines.utc_now()
    entry = ledger.transition(root, args.id, "denied", now=now, basis=lg.stated_text(args.basis, "--basis"))
    record = ledger.show(root, args.id)
    emit(args, record.to_dict(now), f"request {record.id}: denied — {record.response['basis']} "
         f"(ledger entry {entry.seq})")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# model retire


@one_line_errors
def cmd_model_retire(args, root: Path) -> int:
    """Out of production (alias removed, tagged `retired`), then its files and private state
    purged as a superseded version's are (tasks.release.retire_model)."""
    from tasks import release

    retired = release.retire_model(root, args.name)
    entries = retired["purge"]
    purged = all(not e["action"].startswith("purge failed") for e in entries)
    human = (f"model {args.name} v{retired['version']} retired: no longer in production, "
             + ("its model files and private state deleted" if purged else
                f"{entries[0]['action']} (retried by the next `unlearn comply`)"))
    emit(args, retired, human)
    return EXIT_OK if purged else EXIT_FAILED


def not_here(args, root: Path) -> int:
    raise UnlearnError("`model import` runs a flow: use the `unlearn` command")


# ---------------------------------------------------------------------------------------------
# ledger, certificate


@one_line_errors
def cmd_ledger_verify(args, root: Path) -> int:
    from tasks import ledger_db, ledger_verify

    expect = _head_argument(args.expect_head)
    ok, first_bad, message = ledger_verify.verify_chain(root, expect)
    try:
        head = ledger_verify.head(root)
    except ledger_db.UnreadableLedger:  # the message says so: LEDGER BROKEN
        head = None
    payload = {"ok": ok, "first_bad": first_bad, "message": message,
               "head": None if head is None else {"seq": head[0], "hash": head[1]}}
    emit(args, payload, message if ok else f"LEDGER BROKEN: {message}")
    return EXIT_OK if ok else EXIT_FAILED


def _head_argument(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    seq_text, _, digest = value.partition(":")
    digest = digest.strip().lower()
    seq = whole_number_as_written(seq_text)
    if seq is None or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UnlearnError(f"--expect-head '{value}' is not SEQ:HASH (an entry number and its 64-hex MAC, as "
                           "`unlearn ledger verify` prints them)")
    return seq, digest


@one_line_errors
def cmd_ledger_seal(args, root: Path) -> int:
    from tasks import ledger_verify

    expect = _head_argument(args.expect_head)
    ok, message = ledger_verify.seal(root, expect)
    head = ledger_verify.head(root) if ok else None
    payload = {"ok": ok, "message": message, "head": None if head is None else {"seq": head[0], "hash": head[1]}}
    emit(args, payload, message)
    return EXIT_OK if ok else EXIT_FAILED


@one_line_errors
def cmd_certificate_verify(args, root: Path) -> int:
    from tasks import certificates

    ok, message = certificates.verify_certificate(root, Path(args.path))
    emit(args, {"ok": ok, "path": str(args.path), "message": message}, message if ok else f"INVALID: {message}")
    return EXIT_OK if ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    """These commands alone (for tests and `python -m flows.compliance_cli`)."""
    parser = Parser(prog="unlearn")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


if __name__ == "__main__":
    from flows.settings import project_root

    arguments = build_parser().parse_args()
    sys.exit(dispatch(arguments, project_root()))
