"""The portal's languages: English message ids with their Dutch text, and which language a request
gets (the `lang` cookie first, then `Accept-Language`, else English).

`_()` is gettext-shaped so the catalogue can move to real `.po` files without touching templates.
A message id missing from `DUTCH` shows in English; a test keeps every id used in templates and
pages translated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

ENGLISH = "en"
DUTCH_CODE = "nl"
LANGUAGES: Mapping[str, str] = {ENGLISH: "English", DUTCH_CODE: "Nederlands"}
DEFAULT_LANGUAGE = ENGLISH
LANG_COOKIE = "lang"

Translate = Callable[..., str]

DUTCH: Mapping[str, str] = {
    # frame
    "Skip to main content": "Direct naar de inhoud",
    "Main menu": "Hoofdmenu",
    "My account": "Mijn account",
    "Institutions": "Instellingen",
    "Accounts": "Accounts",
    "Tokens": "Tokens",
    "Log out": "Uitloggen",
    "Language": "Taal",
    "Kluis: secure remote access to research data": (
        "Kluis: veilige toegang op afstand tot onderzoeksdata"
    ),
    "Signed in as %(name)s": "Ingelogd als %(name)s",
    # login and activation
    "Log in": "Inloggen",
    "Username": "Gebruikersnaam",
    "Password": "Wachtwoord",
    "Code": "Code",
    "The 6 or 8 digits your token shows now.": "De 6 of 8 cijfers die uw token nu toont.",
    "Log in with your password and the code of your personal token.": (
        "Log in met uw wachtwoord en de code van uw persoonlijke token."
    ),
    "Login failed. Check your username, password and code, then try again.": (
        "Inloggen mislukt. Controleer uw gebruikersnaam, wachtwoord en code en probeer het opnieuw."
    ),
    "Too many attempts. Wait a moment before you try again.": (
        "Te veel pogingen. Wacht even voordat u het opnieuw probeert."
    ),
    "This form has expired. Please try again.": "Dit formulier is verlopen. Probeer het opnieuw.",
    "You have been logged out.": "U bent uitgelogd.",
    "Please log in.": "Log in a.u.b.",
    "Set your password": "Stel uw wachtwoord in",
    "New password": "Nieuw wachtwoord",
    "Repeat the new password": "Herhaal het nieuwe wachtwoord",
    "At least 12 characters. A few unrelated words make a good password.": (
        "Minstens 12 tekens. Een paar losse woorden vormen een goed wachtwoord."
    ),
    "Set password": "Wachtwoord instellen",
    "The two passwords differ.": "De twee wachtwoorden verschillen.",
    "Your password is set. You can now log in with it and your token.": (
        "Uw wachtwoord is ingesteld. U kunt nu inloggen met dit wachtwoord en uw token."
    ),
    "This activation link is invalid, used or expired. Ask the data steward for a new one.": (
        "Deze activeringslink is ongeldig, al gebruikt of verlopen. "
        "Vraag de datasteward om een nieuwe."
    ),
    # step-up
    "Confirm with your token": "Bevestig met uw token",
    "This change needs a fresh code from your token.": (
        "Voor deze wijziging is een nieuwe code van uw token nodig."
    ),
    "Confirm": "Bevestigen",
    "The code was not accepted.": "De code is niet geaccepteerd.",
    "Confirmed. You can make changes for the next few minutes.": (
        "Bevestigd. U kunt de komende minuten wijzigingen doen."
    ),
    # account
    "Account": "Account",
    "Name": "Naam",
    "E-mail": "E-mail",
    "Role": "Rol",
    "Status": "Status",
    "Institution": "Instelling",
    "Confidentiality statement": "Geheimhoudingsverklaring",
    "Signed on %(date)s, valid until %(until)s.": "Getekend op %(date)s, geldig tot %(until)s.",
    "Valid": "Geldig",
    "Expired": "Verlopen",
    "Not signed": "Niet getekend",
    "No valid statement: you cannot log in after this session until it is renewed.": (
        "Geen geldige verklaring: na deze sessie kunt u pas weer inloggen als die is vernieuwd."
    ),
    "My token": "Mijn token",
    "Serial": "Serienummer",
    "Kind": "Soort",
    "State": "Toestand",
    "On loan since": "In bruikleen sinds",
    "You have no token on loan.": "U heeft geen token in bruikleen.",
    "My sessions": "Mijn sessies",
    "Started": "Gestart",
    "Last active": "Laatst actief",
    "From": "Vanaf",
    "Browser": "Browser",
    "This session": "Deze sessie",
    "End": "Beëindigen",
    "End session started %(when)s": "Sessie gestart op %(when)s beëindigen",
    "Log out everywhere": "Overal uitloggen",
    "Ends every session of yours, this one included.": ("Beëindigt al uw sessies, ook deze."),
    "The session has been ended.": "De sessie is beëindigd.",
    # admin: common
    "Actions": "Acties",
    "Save": "Opslaan",
    "Create": "Aanmaken",
    "none": "geen",
    "yes": "ja",
    "no": "nee",
    "Nothing here yet.": "Nog niets hier.",
    "Saved.": "Opgeslagen.",
    # admin: institutions
    "New institution": "Nieuwe instelling",
    "Country": "Land",
    "Authorised from": "Gemachtigd vanaf",
    "Authorised until": "Gemachtigd tot",
    "Authorisation": "Machtiging",
    "Allowed networks": "Toegestane netwerken",
    "One CIDR per line, for example 192.0.2.0/24. Empty: any network.": (
        "Eén CIDR per regel, bijvoorbeeld 192.0.2.0/24. Leeg: elk netwerk."
    ),
    "any network": "elk netwerk",
    "Researchers": "Onderzoekers",
    "At most %(years)s years.": "Hoogstens %(years)s jaar.",
    "Change institution": "Instelling wijzigen",
    "Back to institutions": "Terug naar instellingen",
    # admin: accounts
    "New account": "Nieuw account",
    "Full name": "Volledige naam",
    "Lower case letters, digits, dots, dashes and underscores.": (
        "Kleine letters, cijfers, punten, streepjes en liggende streepjes."
    ),
    "(staff: no institution)": "(medewerker: geen instelling)",
    "Account created": "Account aangemaakt",
    "Give this link to %(name)s. It is shown only now and works once, until %(until)s.": (
        "Geef deze link aan %(name)s. Hij wordt alleen nu getoond en werkt één keer, tot %(until)s."
    ),
    "Activation link": "Activeringslink",
    "Back to accounts": "Terug naar accounts",
    "Statement valid until": "Verklaring geldig tot",
    "Record statement": "Verklaring vastleggen",
    "Signed on": "Getekend op",
    "Valid until": "Geldig tot",
    "Change status": "Status wijzigen",
    "New status": "Nieuwe status",
    "New activation link": "Nieuwe activeringslink",
    "Token": "Token",
    "Search": "Zoeken",
    "Reason": "Reden",
    "Empty: one year after signing.": "Leeg: een jaar na ondertekening.",
    "Reset password": "Wachtwoord opnieuw instellen",
    "The current password stops working and every session of this account ends.": (
        "Het huidige wachtwoord vervalt en alle sessies van dit account worden beëindigd."
    ),
    "Pages": "Pagina's",
    "Previous page": "Vorige pagina",
    "Next page": "Volgende pagina",
    "Software token": "Softwaretoken",
    "For an authenticator app instead of a hardware token. The QR code is shown once.": (
        "Voor een authenticator-app in plaats van een hardwaretoken. "
        "De QR-code wordt één keer getoond."
    ),
    "Enrol a software token": "Een softwaretoken registreren",
    "Let %(name)s scan this code with an authenticator app now. It is shown only once.": (
        "Laat %(name)s deze code nu scannen met een authenticator-app. "
        "Hij wordt maar één keer getoond."
    ),
    "QR code of software token %(serial)s": "QR-code van softwaretoken %(serial)s",
    "Or enter this in the app": "Of voer dit in de app in",
    # admin: tokens
    "all": "alle",
    "Show": "Tonen",
    "Back in stock": "Terug op voorraad",
    "Import tokens (PSKC)": "Tokens importeren (PSKC)",
    "PSKC file": "PSKC-bestand",
    "Pre-shared key (hex), only for encrypted files": (
        "Vooraf gedeelde sleutel (hex), alleen voor versleutelde bestanden"
    ),
    "Import": "Importeren",
    "%(count)s tokens imported.": "%(count)s tokens geïmporteerd.",
    "Assign a token": "Een token uitlenen",
    "Token in stock": "Token op voorraad",
    "To account": "Aan account",
    "Assign": "Uitlenen",
    "No tokens in stock.": "Geen tokens op voorraad.",
    "Holder": "Houder",
    "Changed": "Gewijzigd",
    "Returned": "Teruggebracht",
    "Lost": "Kwijt",
    "Revoke": "Intrekken",
    "Token %(serial)s": "Token %(serial)s",
    # states and roles (shown from enums)
    "pending": "wacht op activering",
    "active": "actief",
    "suspended": "geschorst",
    "closed": "gesloten",
    "in_stock": "op voorraad",
    "on_loan": "in bruikleen",
    "returned": "teruggebracht",
    "lost": "kwijt",
    "revoked": "ingetrokken",
    "hardware": "hardware",
    "software": "software",
    "researcher": "onderzoeker",
    "data_steward": "datasteward",
    "output_checker": "outputcontroleur",
    "ops": "beheer",
    # errors
    "Bad request": "Ongeldig verzoek",
    "Not allowed": "Niet toegestaan",
    "Not found": "Niet gevonden",
    "Conflict": "Conflict",
    "Invalid input": "Ongeldige invoer",
    "Too many requests": "Te veel verzoeken",
    "Something went wrong": "Er ging iets mis",
    "Service unavailable": "Dienst niet beschikbaar",
    "You may not do this.": "Dit mag u niet doen.",
    "This page does not exist.": "Deze pagina bestaat niet.",
    "Someone else changed this at the same time. Reload the page and try again.": (
        "Iemand anders wijzigde dit tegelijk. Laad de pagina opnieuw en probeer het nog eens."
    ),
    "Some fields are missing or invalid.": "Sommige velden ontbreken of zijn ongeldig.",
    "Please wait a moment and try again.": "Wacht even en probeer het opnieuw.",
    "An unexpected error occurred. It has been logged; quote reference %(ref)s.": (
        "Er trad een onverwachte fout op. Die is gelogd; vermeld referentie %(ref)s."
    ),
    "The service is temporarily unavailable. Please try again later.": (
        "De dienst is tijdelijk niet beschikbaar. Probeer het later opnieuw."
    ),
    "Go to the start page": "Naar de startpagina",
    # messages of the domain layer that reach the portal's pages most often
    "Missing or invalid CSRF token: reload the page and try again.": (
        "Ontbrekend of ongeldig CSRF-token: laad de pagina opnieuw en probeer het nog eens."
    ),
    "Too many failed attempts: try again later.": (
        "Te veel mislukte pogingen: probeer het later opnieuw."
    ),
    "Back": "Terug",
    # projects, catalogue and review queues
    "My projects": "Mijn projecten",
    "Catalogue": "Catalogus",
    "Review": "Beoordelen",
    "Upload review": "Beoordeling uploads",  # the airlock's queues in the staff menu
    "Output review": "Beoordeling output",
    "Your request has been sent to the data stewards.": (
        "Uw verzoek is naar de datastewards gestuurd."
    ),
    "Project not found.": "Project niet gevonden.",
    "Request not found.": "Verzoek niet gevonden.",
    "Dataset catalogue": "Datasetcatalogus",
    "What can be requested for a project: descriptions only. The data itself is seen only "
    "inside a project's workspace.": (
        "Wat u voor een project kunt aanvragen: alleen beschrijvingen. De data zelf ziet u "
        "alleen in de werkomgeving van een project."
    ),
    "Topic": "Onderwerp",
    "Description": "Beschrijving",
    "Versions of %(code)s": "Versies van %(code)s",
    "Version": "Versie",
    "Available": "Beschikbaar",
    "Files": "Bestanden",
    "Size": "Omvang",
    "No versions yet.": "Nog geen versies.",
    "Projects": "Projecten",
    "Project": "Project",
    "Project %(code)s": "Project %(code)s",
    "project %(code)s": "project %(code)s",
    "Title": "Titel",
    "Period": "Periode",
    "Lead": "Projectleider",
    "You have no projects yet.": "U heeft nog geen projecten.",
    "Apply for a project": "Een project aanvragen",
    "Change the application of project %(code)s": "De aanvraag van project %(code)s wijzigen",
    "The application is saved as a draft. You can change it until you submit it for review.": (
        "De aanvraag wordt als concept bewaard. U kunt hem wijzigen tot u hem ter beoordeling "
        "indient."
    ),
    "About the project": "Over het project",
    "Purpose": "Doel",
    "The research question and why it needs these microdata.": (
        "De onderzoeksvraag en waarom daarvoor deze microdata nodig zijn."
    ),
    "the institution of the project lead": "de instelling van de projectleider",
    "Period and workspace": "Periode en werkomgeving",
    "Start date": "Begindatum",
    "End date": "Einddatum",
    "At most %(years)s years after the start.": "Hoogstens %(years)s jaar na het begin.",
    "Compute size": "Rekenkracht",
    "%(cpu)s CPU, %(memory)s memory, %(storage)s storage": (
        "%(cpu)s CPU, %(memory)s geheugen, %(storage)s opslag"
    ),
    "small": "klein",
    "medium": "middel",
    "large": "groot",
    "Datasets": "Datasets",
    "The dataset versions the project needs; see the catalogue for what they contain.": (
        "De datasetversies die het project nodig heeft; de catalogus beschrijft wat erin staat."
    ),
    "The catalogue is empty.": "De catalogus is leeg.",
    "People and publications": "Mensen en publicaties",
    "Co-researchers": "Mede-onderzoekers",
    "Usernames, one per line. You are the project lead and need not be listed.": (
        "Gebruikersnamen, één per regel. U bent de projectleider en hoeft niet genoemd te worden."
    ),
    "Legal basis": "Wettelijke grondslag",
    "Expected publications": "Verwachte publicaties",
    "Save draft": "Concept opslaan",
    "since %(when)s": "sinds %(when)s",
    "Comments of the data steward": "Opmerkingen van de datasteward",
    "Edit the application": "De aanvraag wijzigen",
    "Submit for review": "Ter beoordeling indienen",
    "Quote": "Offerte",
    "Estimate": "Raming",
    "What the project would cost as it stands; the data steward makes the quote after review.": (
        "Wat het project zou kosten zoals het nu is; de datasteward maakt de offerte na de "
        "beoordeling."
    ),
    "from %(date)s": "vanaf %(date)s",
    "Item": "Post",
    "Amount": "Bedrag",
    "Total": "Totaal",
    "Accepted on %(when)s.": "Aanvaard op %(when)s.",
    "By accepting, your institution agrees to pay these costs once the project is approved.": (
        "Met het aanvaarden stemt uw instelling ermee in deze kosten te betalen zodra het "
        "project is goedgekeurd."
    ),
    "Accept the quote": "De offerte aanvaarden",
    "Members": "Leden",
    "Role in project": "Rol in het project",
    "Since": "Sinds",
    "project lead": "projectleider",
    "Dataset": "Dataset",
    "Access": "Toegang",
    "granted": "toegekend",
    "requested": "aangevraagd",
    "No datasets.": "Geen datasets.",
    "Requests": "Verzoeken",
    "Request": "Verzoek",
    "Requested": "Aangevraagd",
    "No requests.": "Geen verzoeken.",
    "Withdraw": "Intrekken",
    "Withdraw: %(what)s": "Intrekken: %(what)s",
    "awaiting decision": "wacht op besluit",
    "withdrawn": "ingetrokken",
    "Add member %(subject)s": "Lid toevoegen: %(subject)s",
    "Remove member %(subject)s": "Lid verwijderen: %(subject)s",
    "Extra dataset %(subject)s": "Extra dataset: %(subject)s",
    "Extension to %(subject)s": "Verlenging tot %(subject)s",
    "new member": "nieuw lid",
    "member removal": "lid verwijderen",
    "extra dataset": "extra dataset",
    "extension": "verlenging",
    "Request an extension": "Verlenging aanvragen",
    "New end date": "Nieuwe einddatum",
    "Request extension": "Verlenging aanvragen",
    "Request a new member": "Een nieuw lid aanvragen",
    "Request member": "Lid aanvragen",
    "Request removal of a member": "Verwijdering van een lid aanvragen",
    "Member": "Lid",
    "Request removal": "Verwijdering aanvragen",
    "Request an extra dataset": "Een extra dataset aanvragen",
    "Dataset version": "Datasetversie",
    "Request dataset": "Dataset aanvragen",
    "Costs": "Kosten",
    "No costs yet.": "Nog geen kosten.",
    "Total so far": "Totaal tot nu toe",
    "History": "Geschiedenis",
    "When": "Wanneer",
    "Who": "Wie",
    "What": "Wat",
    "Back to my projects": "Terug naar mijn projecten",
    "Applied": "Aangevraagd",
    "Application changed": "Aanvraag gewijzigd",
    "Submitted for review": "Ter beoordeling ingediend",
    "Returned to the lead with comments": "Met opmerkingen teruggestuurd naar de projectleider",
    "Application rejected": "Aanvraag afgewezen",
    "Quote made": "Offerte uitgebracht",
    "Quote accepted": "Offerte aanvaard",
    "Activated": "Geactiveerd",
    "Unfrozen": "Weer vrijgegeven",
    "Ended": "Beëindigd",
    "Deleted": "Verwijderd",
    "Dataset access granted": "Toegang tot dataset verleend",
    "Dataset access revoked": "Toegang tot dataset ingetrokken",
    "Change requested": "Wijziging aangevraagd",
    "Change approved": "Wijziging goedgekeurd",
    "Change rejected": "Wijziging afgewezen",
    "Request withdrawn": "Verzoek ingetrokken",
    "Member added": "Lid toegevoegd",
    "Member removed": "Lid verwijderd",
    "Dataset added": "Dataset toegevoegd",
    "End date moved": "Einddatum verschoven",
    # review queues
    "Review queues": "Beoordelingslijsten",
    "Project review": "Projecten beoordelen",
    "Request review": "Verzoeken beoordelen",
    "Projects by state": "Projecten per toestand",
    "Submitted": "Ingediend",
    "Quoted": "Offerte uitgebracht",
    "Accepted": "Aanvaard",
    "Approved": "Goedgekeurd",
    "Active": "Actief",
    "Frozen": "Bevroren",
    "Archived": "Gearchiveerd",
    # archive and deletion certificate (project page, staff)
    "Archive and deletion": "Archief en verwijdering",
    "Project archive": "Projectarchief",
    "Created": "Gemaakt",
    "Location": "Locatie",
    "Removed": "Verwijderd",
    "Deletion certificate": "Verwijderingsbewijs",
    "Issued": "Uitgegeven",
    "Retention policy": "Bewaarbeleid",
    "Kept %(years)s years after archiving, until %(day)s": (
        "%(years)s jaar bewaard na archivering, tot %(day)s"
    ),
    "intact": "ongewijzigd",
    "altered since it was issued": "gewijzigd sinds uitgifte",
    "Rejected": "Afgewezen",
    "Submitted: to review": "Ingediend: te beoordelen",
    "Quoted: waiting for the lead": "Offerte uitgebracht: wacht op de projectleider",
    "Accepted: to approve": "Aanvaard: goed te keuren",
    "Approved: waiting for the start date": "Goedgekeurd: wacht op de begindatum",
    "Nothing to review.": "Niets te beoordelen.",
    "Comments for the lead": "Opmerkingen voor de projectleider",
    "Return with comments": "Terugsturen met opmerkingen",
    "Reject": "Afwijzen",
    "Make the quote": "Offerte uitbrengen",
    "Approve": "Goedkeuren",
    "Activate now": "Nu activeren",
    "Reason for freezing": "Reden voor bevriezen",
    "Freeze": "Bevriezen",
    "Unfreeze": "Weer vrijgeven",
    "End now": "Nu beëindigen",
    "Archive": "Archiveren",
    "Delete": "Verwijderen",
    "Waiting for a decision": "Wacht op een besluit",
    "Comment": "Opmerking",
    "Needed when you reject.": "Nodig als u afwijst.",
    "Approve: %(what)s": "Goedkeuren: %(what)s",
    "Reject: %(what)s": "Afwijzen: %(what)s",
    "You are or were a member of this project: another data steward decides.": (
        "U bent of was lid van dit project: een andere datasteward beslist."
    ),
    # project states (shown from the enum)
    "draft": "concept",
    "submitted": "ingediend",
    "rejected": "afgewezen",
    "quoted": "offerte uitgebracht",
    "accepted": "offerte aanvaard",
    "approved": "goedgekeurd",
    "frozen": "bevroren",
    "expired": "verlopen",
    "archived": "gearchiveerd",
    "deleted": "verwijderd",
}

# Enum values are message ids too; these read better in English than the raw value.
ENGLISH_LABELS: Mapping[str, str] = {
    "in_stock": "in stock",
    "on_loan": "on loan",
    "data_steward": "data steward",
    "output_checker": "output checker",
    "ops": "operations",
}

CATALOGUES: Mapping[str, Mapping[str, str]] = {ENGLISH: ENGLISH_LABELS, DUTCH_CODE: DUTCH}


def translator(language: str) -> Translate:
    """`_` for one language: `_("Signed in as %(name)s", name=user)`; unknown ids stay English."""
    catalogue = CATALOGUES.get(language, {})

    def _(message: str, **values: Any) -> str:
        text = catalogue.get(message, message)
        return text % values if values else text

    return _


def parse_accept_language(header: str) -> list[str]:
    """Primary language tags by preference (RFC 9110 §12.5.4): `nl-NL,en;q=0.5` → `[nl, en]`."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")[:20]):
        tag, _sep, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _eq, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().split("-")[0].lower()
        if primary and quality > 0:
            ranked.append((-quality, position, primary))
    return [tag for _q, _p, tag in sorted(ranked)]


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    if cookie is not None and cookie in LANGUAGES:
        return cookie
    for tag in parse_accept_language(accept_language or ""):
        if tag in LANGUAGES:
            return tag
    return DEFAULT_LANGUAGE
