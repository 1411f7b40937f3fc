"""Person names and postal addresses in text, found offline (no model, no download): candidate patterns
that run unchanged in DuckDB's RE2 and in Python's `re` (re.ASCII), and the Python checks that decide.

NAME     one to three capitalised words right after a cue:
           strong cues: a greeting ("Hi", "Hello", "Dear", "Good morning", "Thanks,", "Thank you"), a
           sign-off line ("Best regards,", "Thanks in advance,", "Cheers," ... then the name on the next
           line), "my name is", "Name:", "From:", a title ("Mr.", "Mrs", "Ms", "Dr" ...);
           weak cues ("this is", "I am", "I'm", "spoke to", "agent") count only when the first word is in
           FIRST_NAMES (a short list written here).
         Words in NOT_NAMES (sentence words, days, months, "Order", "Status" ...) end the name there; a
         word of an organisation (ORG_WORDS: "Support", "Team", "Customer" ...) rejects it ("Dear Support
         Team", "Regards,\\nCustomer Care"). Accented Latin letters count as letters (Zoë, Jürgen, Søren).
ADDRESS  a house number (1-5 digits, optional letter), one to four capitalised street words and a street
         suffix (Street/St, Avenue/Ave, Road/Rd, Boulevard/Blvd, Lane/Ln, Drive/Dr, Court/Ct, Way, Place,
         ...) and a direction (NW), optionally after a unit ("Flat 3, "); or a PO box; then optionally a
         unit (Apt 4B, Suite 200, #12), a city after a comma or line break, and a US state + ZIP, a ZIP,
         or a UK postcode; or a German street (Hauptstraße 5, Berliner Straße 12, Lindenweg 3a) with an
         optional "12345 City". A city that is a sentence word ("Please") is cut off. Lower-case street
         names and other countries' forms ("18 rue des Lilas") are not covered.
Both are rules: a name without a cue ("Maria called") or an address without a house number is missed.
"""

from __future__ import annotations

import re

# Letters: ASCII plus Latin-1 and Latin Extended-A (both engines read these ranges as code points).
_UP = "A-ZÀ-ÖØ-ÞĀ-ſ"
_LO = "a-zß-öø-ÿĀ-ſ"
_TOKEN = rf"[{_UP}](?:['’][{_UP}])?[{_LO}]+(?:[{_UP}][{_LO}]+|-[{_UP}{_LO}][{_LO}]+)?"  # O'Brien McKay Jean-Luc
_NAME = rf"{_TOKEN}(?: {_TOKEN}){{0,2}}"
_TITLE = r"(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof)\.?"
_GREETING = (r"(?:Hi|Hello|Hey|Dear|Hiya|Good (?:morning|afternoon|evening|day)|Thanks|Thank you|Many thanks)"
             rf",? (?:{_TITLE} )?")
_SIGNOFF = (r"(?:[Rr]egards|[Bb]est|[Cc]heers|[Tt]hanks(?: in advance| again| a lot| so much)?|"
            r"[Tt]hank you(?: so much| very much)?|[Ss]incerely|[Ww]ishes|[Yy]ours(?: truly| sincerely| faithfully)?)"
            rf",?[ \t]*\r?\n(?:[ \t]*\r?\n)?[ \t]*(?:{_TITLE} )?")
_STRONG = rf"(?:[Mm]y name is|[Mm]y name's|[Nn]ame:|From:|Signed:?) (?:{_TITLE} )?"
_WEAK = r"(?:[Tt]his is|I am|I'm|I’m|[Ss]poke (?:to|with)|[Ss]peaking (?:to|with)|[Tt]alked to|[Aa]gent) "
NAME_CANDIDATE = rf"\b(?:{_GREETING}|{_SIGNOFF}|{_STRONG}|{_WEAK}|{_TITLE} ){_NAME}"

_WORD = rf"[{_UP}0-9][{_LO}{_UP}0-9'’.-]*"
_SUFFIX = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
           r"Crescent|Close|Parkway|Pkwy|Highway|Hwy|Square|Sq|Circle|Cir|Trail|Gardens|Grove|Mews|"
           r"street|avenue|road|lane|drive|court|boulevard|place)")
_UNIT = r"(?:,? (?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room)\.? ?#?[0-9]{1,5}[A-Za-z]?\b|,? #[0-9]{1,5}[A-Za-z]?\b)?"
_CITY = rf"(?:(?:, ?|\r?\n)[{_UP}][{_LO}'’.-]+(?: [{_UP}][{_LO}'’.-]+){{0,2}})?"
_POSTAL = (r"(?:,? [A-Z]{2}(?: [0-9]{5}(?:-[0-9]{4})?)?\b|,? [0-9]{5}(?:-[0-9]{4})?\b|"
           r",? [A-Z]{1,2}[0-9][A-Z0-9]? [0-9][A-Z]{2}\b)?")
_HOUSE = (rf"(?:(?:Flat|Apt|Apartment|Unit|Suite) [0-9]{{1,5}}[A-Za-z]?, )?[0-9]{{1,5}}[A-Za-z]? (?:{_WORD} ){{1,4}}"
          rf"{_SUFFIX}\b\.?(?: (?:N|S|E|W|NE|NW|SE|SW)\b)?")
_PO_BOX = r"(?:P\.? ?O\.? Box|Post Office Box) [0-9]{1,6}\b"
_STREET = rf"\b(?:{_HOUSE}|{_PO_BOX})"
_DE_STREET = (rf"\b(?:[{_UP}][{_LO}]+(?:straße|strasse|weg|gasse|platz|allee)|[{_UP}][{_LO}]+ (?:Straße|Strasse|Weg|"
              rf"Platz|Allee)) [0-9]{{1,4}}[a-z]?\b(?:, [0-9]{{5}} [{_UP}][{_LO}]+)?")
ADDRESS_CANDIDATE = rf"(?:{_STREET}{_UNIT}{_CITY}{_POSTAL}|{_DE_STREET})"

# Python-only parsers of one candidate (named groups; the candidate patterns above stay group-free).
_NAME_PARSE = re.compile(rf"(?P<cue>\b(?:{_GREETING}|{_SIGNOFF}|{_STRONG}|{_WEAK}|{_TITLE} ))(?P<name>{_NAME})", re.ASCII)
_WEAK_RE = re.compile(rf"\b{_WEAK}$", re.ASCII)
_STREET_PARSE = re.compile(rf"(?P<street>{_STREET}{_UNIT})(?P<city>{_CITY})(?P<postal>{_POSTAL})", re.ASCII)
_FIRST_STREET_WORD = re.compile(r"[0-9]{1,5}[A-Za-z]? (\S+)", re.ASCII)
_NAME_CANDIDATE_RE = re.compile(NAME_CANDIDATE, re.ASCII)
_ADDRESS_CANDIDATE_RE = re.compile(ADDRESS_CANDIDATE, re.ASCII)

FIRST_NAMES = frozenset("""
aaron abdul adam adrian ahmed aisha alan albert alex alexander alexandra alice alicia ali amanda amara amelia amir
amy ana andrea andreas andrew angela anna anne anthony antonio arjun arthur ashley aurelie barbara ben benjamin beth
bob brian bruno camila carl carla carlos carmen caroline catherine charles charlie charlotte chen chloe chris
christian christina christine claire clara daniel david deborah diana diego dmitri dominic donna dylan edward elena
eli elias elizabeth ella ellie emily emma eric erik ethan eva fatima felix fernando finn francesca francesco frank
gabriel george giulia grace greg hannah hans harry helen henry hiroshi hugo ian ibrahim ingrid isaac isabel isabella
ivan jack jacob james jamie jan jane jason javier jennifer jessica jin joan joe johan john jonas jordan jorge jose
josé joseph joshua juan julia julian julie jürgen kai karen karim kate katherine kenji kevin kim laura lauren leah leo
leon liam lily linda lisa lucas lucia luis lukas maria mariam mark marta martin mary mateo matthew max maya mehmet
mia michael michelle miguel mohammed mohamed nadia natalie nathan nicholas nicole noah nora olga oliver olivia omar
oscar patrick paul pedro peter priya rachel rafael rahul ravi rebecca renée richard robert rosa ryan sam samuel sara
sarah sebastian sergei sofia sophia sophie søren stefan stephanie steven susan taylor thomas tim tom tomás tyler
valentina victor victoria william wei yuki yusuf zoe zoë
""".split())
NOT_NAMES = frozenset("""
i a an the this that these those it its we you your my our their he she they me us them his her there here all
everyone everybody anyone someone team folks guys friend friends sir madam madame ma'am colleague colleagues
please thanks thank hello hi hey dear regards best kind warm cheers sincerely again so very much just also still
yes no not ok okay sorry good great happy glad hope sure well welcome morning afternoon evening day night today
tomorrow yesterday now soon later monday tuesday wednesday thursday friday saturday sunday january february march
april may june july august september october november december order orders status tracking shipping delivery
refund refunds return returns payment invoice account password login email phone card price product products item
items package parcel update updates issue problem question questions request help info information note urgent
important re fw fwd subject sent regarding about unfortunately however also and or but if when what why how who
where which can could would should will shall did do does is are was were be been have has had new old
""".split())
CITY_WORDS = frozenset("new old saint st north south east west fort port mount lake".split())  # New York, ...
ORG_WORDS = frozenset("""
support team customer customers care service services department desk office center centre company inc ltd llc
gmbh corp staff management helpdesk billing sales admin administrator store shop group
""".split())


def name_hits(candidate: str) -> tuple[tuple[str, str], ...]:
    """The NAME in a name candidate (a cue and up to three capitalised words); () when it is none."""
    m = _NAME_PARSE.fullmatch(candidate)
    if not m:
        return ()
    words = m["name"].split(" ")
    if any(w.lower() in ORG_WORDS for w in words):
        return ()
    keep = []
    for w in words:
        if w.lower() in NOT_NAMES or re.fullmatch(_TITLE, w):
            break
        keep.append(w)
    if not keep:
        return ()
    if _WEAK_RE.search(m["cue"]) and keep[0].lower() not in FIRST_NAMES:
        return ()
    return (("NAME", " ".join(keep)),)


def address_hits(candidate: str) -> tuple[tuple[str, str], ...]:
    """The ADDRESS in an address candidate: its street part, with the city and postal code unless the
    'city' is a sentence word on the next line or after a comma."""
    m = _STREET_PARSE.fullmatch(candidate)
    if not m:
        return (("ADDRESS", candidate),)  # the German form: checked by its pattern alone
    first = _FIRST_STREET_WORD.search(m["street"])
    if first and first.group(1).lower() in NOT_NAMES:
        return ()
    city = m["city"].strip(", \r\n").split(" ")[0].lower()
    if city and city not in CITY_WORDS and (city in NOT_NAMES or city in ORG_WORDS):
        return (("ADDRESS", m["street"]),)
    return (("ADDRESS", candidate),)


def is_name_candidate(candidate: str) -> bool:
    return bool(_NAME_CANDIDATE_RE.fullmatch(candidate))


def is_address_candidate(candidate: str) -> bool:
    return bool(_ADDRESS_CANDIDATE_RE.fullmatch(candidate))
