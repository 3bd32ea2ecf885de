"""German (default) and English for WebAdmin: the English text is the key, German its translation."""

from __future__ import annotations

LANGUAGES = {"de": "Deutsch", "en": "English"}

GERMAN = {
    "Log in": "Anmelden", "Log out": "Abmelden", "User": "Benutzer", "Password": "Passwort",
    "Wrong user name or password.": "Benutzername oder Passwort falsch.",
    "The user name or password is too long.": "Benutzername oder Passwort ist zu lang.",
    "A form field is too long.": "Ein Formularfeld ist zu lang.",
    "The server did not finish the test within {seconds} seconds.":
        "Der Server hat den Test nicht innert {seconds} Sekunden abgeschlossen.",
    "That is WebAdmin's own address and port; a mail account cannot be there.":
        "Das ist die eigene Adresse und der eigene Port von WebAdmin; dort kann kein Mailkonto sein.",
    "Too many failed logins for this user or from this address. Try again in {minutes} minutes, or ask an "
    "administrator.": "Zu viele fehlgeschlagene Anmeldungen für diesen Benutzer oder von dieser Adresse. Bitte in "
                      "{minutes} Minuten erneut versuchen oder einen Administrator fragen.",
    "Please log in to see this page.": "Bitte melden Sie sich an, um diese Seite zu sehen.",
    "This page is for administrators.": "Diese Seite ist Administratoren vorbehalten.",
    "Documents": "Dokumente", "Search": "Suchen", "Mail archiving (IMAP/POP3)": "Mail-Archivierung (IMAP/POP3)",
    "Office 365": "Office 365", "Import": "Import", "Archive links": "Archiv-Links", "Audit": "Protokoll",
    "Accounts": "Konten", "Add account": "Konto hinzufügen", "Name": "Name", "Type": "Typ", "Server": "Server",
    "Port": "Port", "Security": "Sicherheit", "Folders": "Ordner", "Mode": "Modus", "After archiving": "Nach dem Archivieren",
    "All mails": "Alle Mails", "Unread only": "Nur ungelesene", "Save": "Speichern", "Delete": "Löschen",
    "Edit": "Bearbeiten", "Disable": "Deaktivieren", "Enable": "Aktivieren", "Test connection": "Verbindung testen",
    "disabled": "deaktiviert", "enabled": "aktiv",
    "Leave empty to keep the stored password.": "Leer lassen, um das gespeicherte Passwort zu behalten.",
    "Leave empty to keep the stored secret.": "Leer lassen, um das gespeicherte Secret zu behalten.",
    "Changing the type, server, port, security or user needs the password again.":
        "Wer Typ, Server, Port, Sicherheit oder Benutzer ändert, muss das Passwort neu eingeben.",
    "Changing the tenant or client ID needs the client secret again.":
        "Wer Tenant-ID oder Client-ID ändert, muss das Client-Secret neu eingeben.",
    "Plain connections send the password unencrypted.": "Unverschlüsselte Verbindungen senden das Passwort im Klartext.",
    "Connection test": "Verbindungstest", "Login ok": "Anmeldung erfolgreich", "messages": "Nachrichten",
    "Saved.": "Gespeichert.", "Deleted.": "Gelöscht.", "Run now": "Jetzt ausführen",
    "Last runs": "Letzte Läufe", "Failed messages": "Fehlgeschlagene Nachrichten", "Retry": "Erneut versuchen",
    "Started": "Gestartet", "Source": "Quelle", "Status": "Status", "Fetched": "Abgerufen", "Archived": "Archiviert",
    "Duplicates": "Duplikate", "Failed": "Fehlgeschlagen", "Reason": "Grund", "Attempts": "Versuche",
    "Another import is running; try again in a moment.": "Ein anderer Import läuft; bitte gleich noch einmal versuchen.",
    "DNS-Name für API-Aufruf": "DNS-Name für API-Aufruf", "Titelfeld für API-Link": "Titelfeld für API-Link",
    "Empty: document number and title (Aktennummer: Titelinhalt).":
        "Leer: Aktennummer und Titel (Aktennummer: Titelinhalt).",
    "Number": "Nummer", "Title": "Titel", "From": "Von", "To": "An", "Cc": "Cc", "Date": "Datum",
    "Subject": "Betreff", "Attachments": "Anhänge", "Download": "Herunterladen", "Copy link": "Link kopieren",
    "Link copied.": "Link kopiert.", "No documents found.": "Keine Dokumente gefunden.", "Preview": "Vorschau",
    "Text": "Text", "Part of mail": "Teil der Mail", "Defects": "Mängel", "Action": "Aktion", "Actor": "Benutzer",
    "Time": "Zeit", "Target": "Ziel", "Detail": "Detail", "Filter": "Filtern", "Tenant ID": "Tenant-ID",
    "Client ID": "Client-ID", "Client secret": "Client-Secret", "Mailboxes (one per line)": "Postfächer (eines pro Zeile)",
    "Folders (one per line)": "Ordner (einer pro Zeile)", "Anzahl Mails (Office 365)": "Anzahl Mails (Office 365)",
    "Language": "Sprache", "The import has started; this page shows it when it has finished.":
        "Der Import läuft; diese Seite zeigt ihn, sobald er fertig ist.", "Import every (minutes)": "Import alle (Minuten)",
    "The interval must be a whole number of minutes from 1 to 1440.":
        "Das Intervall muss eine ganze Zahl von 1 bis 1440 Minuten sein.", "CA file (PEM, optional)": "CA-Datei (PEM, optional)", "Settings": "Einstellungen", "The secret is stored encrypted and never shown.":
        "Das Secret wird verschlüsselt gespeichert und nie angezeigt.",
}


def translate(text: str, lang: str) -> str:
    """``text`` in ``lang`` (English returns the key itself)."""
    return GERMAN.get(text, text) if lang == "de" else text
