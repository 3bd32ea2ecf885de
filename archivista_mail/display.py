"""Archived names and subjects shown to people: characters that hide or reorder text made visible.

A sender controls a mail's subject, addresses and file names. With U+202E RIGHT-TO-LEFT OVERRIDE
the attachment ``invoice\\u202etxt.exe`` displays as ``invoiceexe.txt``; bidi isolates, marks,
zero-width characters and C0/C1 controls hide or reorder text the same way (the "Trojan Source"
characters, CVE-2021-42574). Shown to people, each such character becomes a visible marker;
in a download's file name it becomes ``_``. Pure functions, no I/O.
"""

from __future__ import annotations

import re

# Characters that are invisible or change how the text around them is ordered:
#   C0 and C1 controls, DEL                  U+0000-001F, U+007F-009F
#   soft hyphen, Arabic letter mark          U+00AD, U+061C
#   Mongolian vowel separator                U+180E
#   zero-width space, LRM, RLM               U+200B, U+200E-200F (not ZWNJ/ZWJ U+200C-200D: emoji and
#                                            Persian or Indic words need them, and they reorder nothing)
#   bidi embeddings and overrides            U+202A-202E
#   line and paragraph separators            U+2028-2029
#   word joiner, invisible operators,
#   bidi isolates, deprecated format chars   U+2060-206F
#   byte order mark / zero-width no-break    U+FEFF
#   interlinear annotation (hides text)      U+FFF9-FFFB
#   tag characters (invisible ASCII copies)  U+E0000-E007F
#   lone surrogates (undecodable bytes)      U+D800-DFFF
HIDING = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2028\u2029"
                    "\u2060-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f\ud800-\udfff]")
_UNSAFE_IN_FILENAME = re.compile(r'[\\/"]')


def reveal_controls(text: str | None) -> str:
    """``text`` with each hiding or reordering character (see ``HIDING``) shown as a ``⟨U+202E⟩`` marker.

    None becomes ''. Never raises.
    """
    if not text:
        return ""
    return HIDING.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text)


def neutral_filename(name: str) -> str:
    """``name`` fit for a Content-Disposition header: hiding characters, slashes and quotes become ``_``."""
    return _UNSAFE_IN_FILENAME.sub("_", HIDING.sub("_", name))
