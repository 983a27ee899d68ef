"""The customer's Activity page: the audit log of their account and objects, in words.

One line per action: an operation's request and the outcome its worker recorded later fold into one.
Changes made by staff show as "Staff", without the staff member's name or address (staff see those in
the backoffice).
"""

from dataclasses import dataclass, field

from .models import AuditEntry

# What each action is called on the page; anything else is spelled out from its code.
ACTION_WORDS = {
    "vm.create": "Create VM",
    "vm.start": "Start VM",
    "vm.shutdown": "Shut down VM",
    "vm.force_off": "Force off VM",
    "vm.reboot": "Reboot VM",
    "vm.reinstall": "Reinstall VM",
    "vm.reset_password": "Set VM password",
    "vm.change_iso": "Change the CD in the VM",
    "vm.rescue": "Start rescue system",
    "vm.leave_rescue": "Leave rescue system",
    "vm.resize": "Resize VM",
    "vm.delete": "Delete VM",
    "account.login": "Sign in",
    "account.logout": "Sign out",
    "account.signup": "Create account",
    "account.email_confirm": "Confirm email address",
    "account.profile": "Change name",
    "account.password_change": "Change password",
    "account.password_reset": "Reset password",
    "account.2fa_enable": "Turn on two-factor sign-in",
    "account.2fa_disable": "Turn off two-factor sign-in",
    "account.2fa_recovery_codes": "Make new recovery codes",
    "account.suspend": "Suspend account",
    "account.unsuspend": "Lift suspension",
    "account.quota": "Change limits",
    "sshkey.add": "Add SSH key",
    "sshkey.delete": "Delete SSH key",
    "apitoken.create": "Create API token",
    "apitoken.revoke": "Revoke API token",
}
OUTCOME_WORDS = {
    AuditEntry.Outcome.REQUESTED: "In progress",
    AuditEntry.Outcome.SUCCEEDED: "Done",
    AuditEntry.Outcome.FAILED: "Failed",
    AuditEntry.Outcome.REFUSED: "Refused",
    "cancelled": "Cancelled",  # an operation staff cancelled (its reason is in the details)
}


def action_words(action: str) -> str:
    if action in ACTION_WORDS:
        return ACTION_WORDS[action]
    noun, _, verb = action.partition(".")
    return f"{verb.replace('_', ' ')} {noun}".strip().capitalize()


@dataclass
class Line:
    """One action as the account's owner sees it."""

    entry: AuditEntry
    viewer_id: int
    outcome: str = ""
    finished_at: object = None
    details: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.outcome = self.entry.outcome
        self.details = [self.entry.detail] if self.entry.detail else []

    def finish(self, outcome_entry: AuditEntry) -> None:
        self.outcome, self.finished_at = outcome_entry.outcome, outcome_entry.at
        if outcome_entry.detail:
            self.details.append(outcome_entry.detail)

    @property
    def at(self):
        return self.entry.at

    @property
    def what(self) -> str:
        return action_words(self.entry.action)

    @property
    def on(self) -> str:
        return self.entry.target_label

    @property
    def outcome_words(self) -> str:
        return OUTCOME_WORDS.get(self.outcome, self.outcome)

    @property
    def by(self) -> str:
        if self.entry.actor_id == self.viewer_id:
            return "You"
        if self.entry.actor_id is None:
            return "Someone" if self.entry.action == "account.login" else "The panel"
        return "Staff"

    @property
    def address(self) -> str | None:
        """Where it came from: the owner's own (and strangers' sign-in attempts), never staff's."""
        return None if self.by == "Staff" else self.entry.address


def lines_for(entries, viewer) -> list[Line]:
    """The entries (newest first) as lines, newest first: a requested operation and the outcome its
    worker recorded fold into one line."""
    lines, waiting = [], {}
    for entry in reversed(list(entries)):
        key = (entry.action, entry.target_id)
        if entry.outcome != AuditEntry.Outcome.REQUESTED and key in waiting:
            waiting.pop(key).finish(entry)
            continue
        line = Line(entry, viewer.pk)
        lines.append(line)
        if entry.outcome == AuditEntry.Outcome.REQUESTED:
            waiting[key] = line
    return lines[::-1]
