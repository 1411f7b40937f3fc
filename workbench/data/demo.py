"""Deterministic synthetic support-ticket data: tickets, malformed files, annotations (stdlib + numpy only)."""

from __future__ import annotations

import csv
import json
import random
import re
from bisect import bisect
from collections import deque
from collections.abc import Iterator
from itertools import accumulate, product
from pathlib import Path

import numpy as np

CATEGORIES = ["shipping", "refund", "billing", "account_access", "product_defect",
              "order_change", "cancellation", "warranty", "gift_card", "data_privacy"]
CATEGORY_WEIGHTS = {"shipping": 0.50, "refund": 0.15, "billing": 0.11, "account_access": 0.07,
                    "product_defect": 0.06, "order_change": 0.045, "cancellation": 0.035,
                    "warranty": 0.015, "gift_card": 0.01, "data_privacy": 0.005}
PRIORITIES = ["low", "normal", "high", "urgent"]
CHANNELS = ["email", "chat", "phone", "web"]
CONFUSIONS = {"shipping": ["order_change"], "order_change": ["shipping", "cancellation"], "billing": ["refund"],
              "refund": ["billing", "cancellation"], "cancellation": ["refund", "order_change"],
              "warranty": ["product_defect"], "product_defect": ["warranty", "refund"], "gift_card": ["billing"],
              "account_access": ["data_privacy"], "data_privacy": ["account_access"]}  # plausible label mix-ups
NEAR_DUP_RATE, EXACT_DUP_RATE, PII_RATE, TYPO_RATE = 0.05, 0.002, 0.10, 0.08

_FIRST = ("Maria James Aisha Tom Priya Lukas Emma Noah Sofia Liam Olivia Mateo Chloe Ethan Hannah "
          "Daniel Yuki Omar Grace Leo Isabel Samuel Fatima Jack Nora Ben Elena Ravi Zoë José Renée "
          "Jürgen Søren Ana Mohammed Lily Oscar Mia Arjun Clara Felix Amara Kenji Sara Tomás Ingrid").split()
_LAST = ("Smith Garcia Müller Okafor Nguyen Rossi Kowalski Patel Johnson Brown Dubois Silva Tanaka "
         "Andersen O'Brien Kim Novak Fischer Haddad Lopez Walsh Schmidt Costa Ivanova Larsen").split()
_AGENTS = "Alex Jordan Sam Taylor Morgan Casey Riley Jamie Robin Charlie Dana Kai".split()
_BRANDS = "Aurora Nimbus Vertex Lumen Polar Cascade Orbit Ember Harbor Zephyr Summit Willow".split()
_ITEMS = ["wireless headphones", "smart watch", "espresso machine", "running shoes", "desk lamp", "backpack",
          "bluetooth speaker", "air fryer", "winter jacket", "office chair", "phone case", "robot vacuum", "yoga mat",
          "blender", "e-reader", "electric toothbrush", "gaming mouse", "duvet set", "standing desk", "kettle"]
_PLANS = ["Premium monthly", "Family annual", "Pro", "Basic", "Plus yearly"]
_CURRENCIES = ["$", "$", "€", "£"]
_MONTHS = "January February March April May June July August September October November December".split()
_DATES = [f"{m} {d}" for m in _MONTHS for d in range(1, 29)] + \
         [f"2024-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29)]
_EMAIL_DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]
_PHONES = ["+44 20 7946 0{:03d}", "+1 415-555-01{:02d}", "+1 212-555-01{:02d}", "+49 30 9018{:03d}",
           "+61 2 5550 {:04d}", "+33 1 42 68 {:02d} 00", "+61 491 570 {:03d}", "+44 161 496 0{:03d}"]
_CARDS = ["4111 1111 1111 1111", "5555 5555 5555 4444", "4012 8888 8888 1881", "4242 4242 4242 4242",  # Luhn-valid
          "3782 822463 10005", "5105-1051-0510-5100", "6011-1111-1111-1117", "4000-0566-5566-5556"]  # test cards

_OPENINGS = [o + "\n\n" if o else "" for o in ["Hi,", "Hello,", "Hello there,", "Dear support team,",
                                                  "Good morning,", "Hi team,", "Hey,", "To whom it may concern,", ""]]
_CLOSINGS = ["Thanks in advance,", "Best regards,", "Kind regards,", "Thank you,", "Cheers,", "Many thanks,"]
_GREETINGS = ["Hi {name},", "Hello {name},", "Dear {name},", "Hi {name}, thanks for getting in touch.", "Good day,"]
_SIGNOFFS = ["Best regards,\n{agent}\nCustomer Support", "Kind regards,\n{agent} from the Support Team",
             "All the best,\n{agent}", "Warm regards,\n{agent}\nCustomer Care"]
# Templates below use "[a|b]" for alternative phrasings (expanded at import) and "{slot}" for slot fillers.
_CONTEXTS = [
    "I have been a customer for {years} years and this is [honestly|really] the first time this happened.",
    "I already [went through|read] the help center articles but couldn't find anything that covers my situation.",
    "This is my [second|third] message about this, so I would [really|truly] appreciate a quick answer this time.",
    "I tried calling the hotline [yesterday|this morning] but the wait was over forty minutes and I had to hang up.",
    "I [really like|usually love] your products, so I hope we can sort this out without too much hassle.",
    "I am travelling next week, so it would be great to get this resolved before {date}.",
    "Your chat assistant sent me [in circles|to the FAQ twice], which is why I'm writing here instead."]
_PII = ["[You can reach me at|Please reply to|My email is] {email} [if anything is unclear|instead of my old address].",
        "[My phone number is|Call me back on|You can call me on] {phone}[, any time after 5pm| if that's easier].",
        "The card I used was {card}[, in case that helps you find the payment| (exp 12/27)].",
        "I paid with my card {card} and my number is {phone}.",
        "[Please send the replacement to|My address is|I live at] {address}[, in case you need it|]."]
# Postal addresses (fictional) for the PII template above: US forms with and without unit/city/ZIP, German.
_STREETS = "Oak Maple Cedar Elm Pine Willow Lake Hill River Church Mill Station Highland Sunset Lincoln Franklin".split()
_SUFFIXES = ["Street", "St", "Avenue", "Ave", "Road", "Rd", "Lane", "Drive", "Boulevard", "Court", "Way", "Place"]
_CITIES = [("Springfield", "IL", "627"), ("Portland", "OR", "972"), ("Austin", "TX", "787"), ("Madison", "WI", "537"),
           ("Denver", "CO", "802"), ("Salem", "MA", "019"), ("Fairview", "TN", "370")]
_DE = [("Linden", "straße", "10115 Berlin"), ("Garten", "weg", "80331 München"), ("Schiller", "straße", "50667 Köln")]
_EMPATHY = [
    "Thank you for reaching out, and I'm [sorry|really sorry] for the trouble you've had with your {product}.",
    "Thanks for your patience while I looked into this[ for you|], and apologies for the inconvenience.",
    "I [completely|fully] understand how frustrating this must be, and I'm happy to help you sort it out.",
    "I'm sorry to hear about this, and thank you for giving us the chance to put it right."]
_FOOTERS = [
    "If you have any other questions, just reply to this [message|email] and we'll be glad to help.",
    "If there is anything else I can do for you, simply reply here and the message will come straight to me.",
    "You will also receive a short survey about this conversation; we'd really value your feedback."]
# Per category: (problem statements, details, requests, agent actions, agent next steps).
_TEXT = {
    "shipping": (
        ["I [ordered|bought] the {product} on {date} (order {order}) and it still hasn't [arrived|shown up].",
         "The tracking for my order {order} hasn't moved in {days} days and I'm getting [worried|a bit anxious]."],
        ["The tracking number {tracking} just says 'in transit' and the courier website is no help.",
         "The courier claims it was delivered, but I was home all day and nobody rang the bell."],
        ["[Could you please|Can you] [tell me where my package actually is|check with the courier for me]?"],
        ["I've checked order {order} and the parcel is currently at the regional courier [depot|hub].",
         "I contacted the courier about tracking number {tracking}, and they've opened an investigation."],
        ["If it hasn't arrived within three business days, I'll send a replacement free of charge.",
         "I've also refunded the {amount} shipping fee, which you'll see on your statement within 5-7 days."]),
    "refund": (
        ["I returned the {product} from order {order} on {date}, but I still haven't [received|seen] my refund.",
         "It has been {days} days since you confirmed my return and the refund of {amount} is still missing."],
        ["The return label said refunds take five business days, and that was [weeks|a month] ago.",
         "I still have the drop-off receipt and the original packaging if you need it."],
        ["[Could you please|Can you] [process the refund of {amount} as soon as possible|send me a reference]?"],
        ["I can confirm that we received your return of the {product} and the refund has now been issued.",
         "I looked into order {order}: the refund of {amount} was stuck in our system, which I've now fixed."],
        ["Depending on your bank, it can take 3-5 business days for the money to appear.",
         "Your refund reference is RF-{last4}{days}; your bank can use it to trace the payment."]),
    "billing": (
        ["I was charged {amount} twice for the same order {order} on {date}.",
         "There is a charge of {amount} on my statement from {date} that I don't [recognise|understand]."],
        ["The invoice in my account shows a different amount from what my bank shows.",
         "I never upgraded my plan, yet the charge says {plan}, and it went to my card ending in {last4}."],
        ["[Could you|Can you] [refund the extra charge and send a corrected invoice|explain what this charge is for]?"],
        ["I've reviewed your billing history and the second charge of {amount} was indeed a duplicate.",
         "The charge from {date} relates to the renewal of your {plan} plan, which was billed at the wrong rate."],
        ["I've reversed the extra charge, and a corrected invoice is now available in your account.",
         "The difference of {amount} will be credited to your card ending in {last4}."]),
    "account_access": (
        ["I can't log in to my account anymore; it says my password is wrong even after [resetting|changing] it.",
         "My account has been locked after too many login attempts and I'm not receiving the two-factor code."],
        ["I tried the 'forgot password' link [three times|twice] but the email never arrives.",
         "I have an open order {order} and I can't check its status without logging in."],
        ["[Can you|Could you please] [unlock my account for me|help me get back into my account] as soon as possible?"],
        ["I've unlocked your account and sent a fresh password reset link.",
         "For your security, I've reset your two-factor settings so you can enrol again."],
        ["[The reset link is valid for 24 hours; check your spam folder too|Once logged in, pick a new password]."]),
    "product_defect": (
        ["The {product} I received on {date} stopped working after just {days} days.",
         "My new {product} (order {order}) arrived damaged: the [casing|screen] is cracked."],
        ["I followed the manual exactly and even tried a factory reset, but nothing changed.",
         "It makes a loud noise and gets very hot, which worries me with the kids around."],
        ["[Can you send me a replacement|Could you tell me how to return it] or give me my {amount} back?"],
        ["A faulty {product} is definitely not the quality we aim for, and I've logged the fault with our team.",
         "Thanks for the details, this matches a known issue with an early batch of the {product}."],
        ["I've arranged a replacement, which will ship within two business days.",
         "A prepaid return label is attached; please send the faulty unit back within 30 days."]),
    "order_change": (
        ["I need to change the delivery address for order {order}, which I placed on {date}.",
         "I accidentally ordered two {product}s in order {order} and only need one."],
        ["[The status still says 'processing', so it may not have shipped|I'll pay any difference of {amount}]."],
        ["[Could you|Can you please] update the order before it ships and [let me know|confirm by email]?"],
        ["Good news: order {order} hadn't shipped yet, so I was able to make the change.",
         "Unfortunately order {order} was already handed to the courier, so I couldn't edit it directly."],
        ["[You'll get an updated confirmation within the hour|Or refuse the delivery and we'll refund {amount}]."]),
    "cancellation": (
        ["Please cancel my order {order} placed on {date}; I no longer need the {product}.",
         "I want to cancel my {plan} subscription [effective immediately|before the next renewal]."],
        ["[I found the same item cheaper elsewhere|I was already charged {amount} for the next period]."],
        ["[Can you|Please] confirm the cancellation [by email|in writing] and make sure I'm not charged again."],
        ["I've cancelled order {order} for you, and no further charges will be made.",
         "Your {plan} subscription has been cancelled and will stay active until the end of the period."],
        ["[Your refund of {amount} will arrive within 5 days|You can reactivate any time in your account settings]."]),
    "warranty": (
        ["My {product} [bought on {date}|from order {order}] is still under warranty and has started to fail."],
        ["[I registered it when I bought it|A repair shop quoted {amount}], and I still have the receipt."],
        ["[What do I need to send you|How long does it take] to [start the claim|get it repaired]?"],
        ["Your {product} is covered by our two-year warranty, [so there is no cost to you|claim WC-{last4}]."],
        ["[Please pack it securely; a courier will pick it up|If it can't be fixed we'll replace it] within 5 days."]),
    "gift_card": (
        ["[The gift card code I received doesn't work|The {amount} gift card I bought on {date} shows zero balance]."],
        ["I double-checked that I typed the code correctly[, including the dashes|; it's from order {order}]."],
        ["[Could you|Can you please] [check the gift card and restore the balance|resend the gift card email]?"],
        ["I've checked the gift card [and it was never activated|for order {order}] and restored the {amount}."],
        ["The card is valid for another 12 months[ from today|; send me a screenshot if it still fails]."]),
    "data_privacy": (
        ["[Under GDPR I'd like a copy of all the data you hold about me|Please delete my account and all my data]."],
        ["[I haven't used the account in years|I never agreed to have my data shared with partners]."],
        ["Please confirm [in writing|by email] once this is done."],
        ["[Our data protection team will handle this within 30 days|I've removed you from all marketing lists]."],
        ["You'll receive a confirmation email once [the process is complete|everything has been done]."]),
}
_TYPOS = [("received", "recieved"), ("address", "adress"), ("because", "becuase"), ("the ", "teh "),
          ("definitely", "definately"), ("please", "pls"), ("until", "untill"), ("which", "wich")]
_SYNONYMS = [(" order ", " purchase "), (" please ", " kindly "), (" can't ", " cannot "), ("Thanks", "Thank you"),
             (" really ", " truly "), (" I'm ", " I am "), (" need ", " want "), (" days", " business days")]
# Priority weights (low, normal, high, urgent) for categories that differ from the default in _PRIO_CUM.
_PRIO_W = {"account_access": (0.05, 0.35, 0.4, 0.2), "data_privacy": (0.05, 0.35, 0.4, 0.2),
           "billing": (0.1, 0.5, 0.3, 0.1), "product_defect": (0.1, 0.5, 0.3, 0.1)}


def _expand(templates: list[str]) -> list[str]:
    """Expand every "[a|b]" group into all its alternatives, in a fixed order."""
    out = []
    for t in templates:
        pieces = re.split(r"\[([^\]]*)\]", t)  # odd positions hold the alternatives
        out += ["".join(c) for c in product(*[p.split("|") if k % 2 else [p] for k, p in enumerate(pieces)])]
    return out


_CONTEXTS, _PII, _EMPATHY, _FOOTERS = map(_expand, (_CONTEXTS, _PII, _EMPATHY, _FOOTERS))
_TEXT = {cat: tuple(map(_expand, lists)) for cat, lists in _TEXT.items()}
_PRODUCTS = [f"{b} {i}" for b in _BRANDS for i in _ITEMS]
_MAIL_NAMES = {n: n.lower().translate(str.maketrans("áéëíóúüøö", "aeeiouuoo", "'")) for n in _FIRST + _LAST}
_M = 1_000_000  # resolution of probability columns (draws are integers in [0, _M))
_ANY = 1 << 30  # size of columns used as "% len(list)" for the per-category lists (bias < 1e-8)


def _thresholds(weights) -> list[int]:
    """Cumulative weights scaled to [0, _M), for bisect-based weighted picks on an integer draw."""
    total = sum(weights)
    return [round(c / total * _M) for c in accumulate(weights)][:-1]


_CAT_CUM = _thresholds([CATEGORY_WEIGHTS[c] for c in CATEGORIES])
_PRIO_CUM = {c: _thresholds(_PRIO_W.get(c, (0.25, 0.55, 0.15, 0.05))) for c in CATEGORIES}
_CHAN_CUM = _thresholds([0.45, 0.3, 0.1, 0.15])
# One uniform integer draw per column per ticket, made in numpy batches (much cheaper than per-call RNG).
_COLUMNS = [("dup", _M), ("src", _ANY), ("edit", 3), ("edit_arg", _ANY), ("cat", _M), ("prio", _M),
            ("chan", _M), ("name", len(_FIRST)), ("agent", len(_AGENTS)), ("product", len(_PRODUCTS)),
            ("order", 90_000_000), ("date", len(_DATES)), ("cents", 40_000), ("cur", len(_CURRENCIES)),
            ("tracking", 9 * 10**11), ("days", 20), ("years", 12), ("last4", 9000), ("plan", len(_PLANS)),
            ("opening", len(_OPENINGS)), ("problem", _ANY), ("detail", _ANY), ("ctx_p", _M),
            ("ctx", len(_CONTEXTS)), ("pii_p", _M), ("pii", len(_PII)), ("mail_last", len(_LAST)),
            ("mail_num", 100), ("domain", len(_EMAIL_DOMAINS)), ("phone", len(_PHONES)), ("phone_num", 100),
            ("card", len(_CARDS)), ("request", _ANY), ("closing", len(_CLOSINGS)), ("sig_p", _M),
            ("sig_last", len(_LAST)), ("typo_p", _M), ("typo", len(_TYPOS)), ("greeting", len(_GREETINGS)),
            ("empathy", len(_EMPATHY)), ("action", _ANY), ("next", _ANY), ("footer_p", _M),
            ("footer", len(_FOOTERS)), ("signoff", len(_SIGNOFFS))]
_SIZES = np.array([size for _, size in _COLUMNS], dtype=np.float64)


def _draws(rng: np.random.Generator, n: int, batch: int = 2048) -> Iterator[list[int]]:
    """Yield n rows of integer draws, one per _COLUMNS entry, each uniform in [0, size)."""
    for lo in range(0, n, batch):
        yield from (rng.random((min(batch, n - lo), len(_SIZES))) * _SIZES).astype(np.int64).tolist()


def generate_tickets(n: int, *, seed: int = 7, start: int = 0, labels: bool = False) -> Iterator[dict]:
    """Yield n tickets (ids from T{start+1:06d}); a shorter n gives a prefix; each start has its own stream.
    labels: each ticket also has "pii": [(field, type, value)] of the names, addresses, emails, phones, cards
    and order/tracking/reference numbers put in it (None for a near-duplicate, whose edit may change them)."""
    rng = np.random.default_rng([seed, start])
    near_cut, exact_cut = round((NEAR_DUP_RATE + EXACT_DUP_RATE) * _M), round(EXACT_DUP_RATE * _M)
    recent: deque = deque(maxlen=500)  # (ticket, customer name) of the last 500 original tickets
    for i, row in enumerate(_draws(rng, n)):
        (dup, src, edit, edit_arg, cat_u, prio_u, chan_u, name_i, agent_i, product_i, order, date_i, cents,
         cur_i, tracking, days, years, last4, plan_i, opening_i, problem_i, detail_i, ctx_p, ctx_i, pii_p,
         pii_i, mail_last, mail_num, domain_i, phone_i, phone_num, card_i, request_i, closing_i, sig_p,
         sig_last, typo_p, typo_i, greeting_i, empathy_i, action_i, next_i, footer_p, footer_i, signoff_i) = row
        tid = f"T{start + i + 1:06d}"
        channel = CHANNELS[bisect(_CHAN_CUM, chan_u)]
        if recent and dup < near_cut:  # near-duplicate (or, rarely, exact copy) of a recent ticket
            old, name = recent[src % len(recent)]
            prompt = old["prompt"] if dup < exact_cut else _edit(old["prompt"], name, edit, edit_arg)
            yield {"id": tid, "prompt": prompt, "completion": old["completion"], "category": old["category"],
                   "priority": old["priority"], "channel": channel, **({"pii": None} if labels else {})}
            continue
        cat = CATEGORIES[bisect(_CAT_CUM, cat_u)]
        problems, details, requests, actions, nexts = _TEXT[cat]
        name = _FIRST[name_i]
        slots = {"name": name, "agent": _AGENTS[agent_i], "product": _PRODUCTS[product_i],
                 "order": f"ORD-{order + 10_000_000}", "date": _DATES[date_i],
                 "amount": f"{_CURRENCIES[cur_i]}{cents // 100 + 5}.{cents % 100:02d}",
                 "tracking": f"1Z{tracking + 10**11}", "days": days + 3, "years": years + 2,
                 "last4": last4 + 1000, "plan": _PLANS[plan_i]}
        parts = [problems[problem_i % len(problems)], details[detail_i % len(details)]]
        if ctx_p < 0.6 * _M:
            parts.append(_CONTEXTS[ctx_i])
        if pii_p < PII_RATE * _M:
            parts.append(_PII[pii_i])
            slots["email"] = f"{_MAIL_NAMES[name]}.{_MAIL_NAMES[_LAST[mail_last]]}{mail_num}@{_EMAIL_DOMAINS[domain_i]}"
            slots["phone"] = _PHONES[phone_i].format(phone_num)
            slots["card"] = _CARDS[card_i]
            slots["address"] = _address(mail_num * 17 + phone_num, mail_last + phone_num, card_i + phone_i,
                                        mail_num + domain_i)
        parts.append(requests[request_i % len(requests)])
        sig = name if sig_p < 0.6 * _M else f"{name} {_LAST[sig_last]}"
        prompt = (_OPENINGS[opening_i] + " ".join(parts) + f"\n\n{_CLOSINGS[closing_i]}\n{sig}").format_map(slots)
        if typo_p < TYPO_RATE * _M:
            prompt = prompt.replace(*_TYPOS[typo_i], 1)
        footer = f"{_FOOTERS[footer_i]}\n\n" if footer_p < 0.9 * _M else ""
        completion = (f"{_GREETINGS[greeting_i]}\n\n{_EMPATHY[empathy_i]} {actions[action_i % len(actions)]} "
                      f"{nexts[next_i % len(nexts)]}\n\n{footer}{_SIGNOFFS[signoff_i]}").format_map(slots)
        ticket = {"id": tid, "prompt": prompt, "completion": completion, "category": cat,
                  "priority": PRIORITIES[bisect(_PRIO_CUM[cat], prio_u)], "channel": channel}
        if labels:
            ticket["pii"] = _labels(slots, prompt, completion, sig, _GREETINGS[greeting_i], last4 + 1000, days + 3)
        recent.append((ticket, name))
        yield ticket


def _address(num: int, street: int, form: int, city: int) -> str:
    """A fictional postal address from existing draws (no extra random column, so other draws stay as they were)."""
    house, road, suffix = num + 1, _STREETS[street % len(_STREETS)], _SUFFIXES[(num + form) % len(_SUFFIXES)]
    town, state, zip3 = _CITIES[city % len(_CITIES)]
    if form % 4 == 0:
        return f"{house} {road} {suffix}, {town}, {state} {zip3}{num % 100:02d}"
    if form % 4 == 1:
        return f"{house} {road} {suffix}, Apt {num % 40 + 1}, {town}, {state} {zip3}{num % 100:02d}"
    if form % 4 == 2:
        return f"{house} {road} {suffix}"
    stem, kind, place = _DE[city % len(_DE)]
    return f"{stem}{kind} {num % 120 + 1}, {place}"


def _labels(slots: dict, prompt: str, completion: str, sig: str, greeting: str, last4: int, days: int) -> list:
    """(field, type, value) of the personal data and order numbers the generator put in a ticket."""
    refs = [slots["order"], slots["tracking"], f"RF-{last4}{days}", f"WC-{last4}"]
    out = []
    for field, text, names in (("prompt", prompt, [sig]), ("completion", completion,
                                                          [slots["name"]] * ("{name}" in greeting) + [slots["agent"]])):
        found = [("NAME", v) for v in names] + [("ORDER", v) for v in refs if re.search(rf"\b{v}\b", text)]
        found += [(k.upper(), slots[k]) for k in ("email", "phone", "card", "address") if k in slots]
        out += [(field, kind, value) for kind, value in found if value in text]
    return out


def _edit(text: str, name: str, kind: int, arg: int) -> str:
    """Return text with one small edit: a synonym, a punctuation change or a swapped customer name."""
    if kind == 0:
        old, new = _SYNONYMS[arg % len(_SYNONYMS)]
        if old in text:
            return text.replace(old, new, 1)
    elif kind == 1:
        if "?" in text:
            return text.replace("?", "??", 1)
        if ". " in text:
            return text.replace(". ", "! ", 1)
    elif name in text:  # the signature is the last occurrence of the customer's name
        other = _FIRST[arg % len(_FIRST)]
        head, _, tail = text.rpartition(name)
        return head + (other if other != name else "Sam") + tail
    return text.rstrip() + "\nThanks again."


def write_jsonl(path, n: int, *, seed: int = 7) -> int:
    """Write n tickets to path as UTF-8 JSON Lines; return the number of bytes written."""
    enc = json.encoder.encode_basestring  # JSON string literal without ASCII escaping (C-accelerated)
    written, buf = 0, []
    with open(path, "wb") as f:
        for t in generate_tickets(n, seed=seed):
            buf.append(f'{{"id": "{t["id"]}", "prompt": {enc(t["prompt"])}, "completion": {enc(t["completion"])}, '
                       f'"category": "{t["category"]}", "priority": "{t["priority"]}", '
                       f'"channel": "{t["channel"]}"}}\n')
            if len(buf) >= 5000:
                written += f.write("".join(buf).encode("utf-8"))
                buf = []
        written += f.write("".join(buf).encode("utf-8"))
    return written


def write_malformed_jsonl(path) -> list[tuple[int, str]]:
    """Write a ~20-line prompt/completion JSONL with a few bad lines; return [(line_no, problem)] for those."""
    good = [json.dumps({"prompt": t["prompt"], "completion": t["completion"]}, ensure_ascii=False)
            for t in generate_tickets(20, seed=11)]
    p, c = json.loads(good[0])["prompt"], json.loads(good[0])["completion"]
    bad = {4: (good[3][:-1], "malformed JSON (missing closing brace)"),
           7: (json.dumps({"prompt": p}), "missing 'completion' field"),
           10: (json.dumps({"prompt": p, "completion": ""}), "empty completion"),
           13: (json.dumps({"prompt": p, "completion": 42}), "completion is a number, not a string"),
           16: (json.dumps({"prompt": " \t ", "completion": c}), "whitespace-only prompt"),
           19: (json.dumps([p, c]), "line is a JSON array, not an object")}
    Path(path).write_text("".join((bad[i][0] if i in bad else good[i - 1]) + "\n" for i in range(1, 21)), "utf-8")
    return [(i, bad[i][1]) for i in sorted(bad)]


def write_malformed_chat_jsonl(path) -> list[tuple[int, str]]:
    """Write a ~20-line chat-format JSONL with a few bad lines; return [(line_no, problem)] for those."""
    system = {"role": "system", "content": "You are a friendly, concise customer support agent."}

    def chat(t, msgs=None):
        msgs = msgs if msgs is not None else [system, {"role": "user", "content": t["prompt"]},
                                               {"role": "assistant", "content": t["completion"]}]
        return json.dumps({"messages": msgs, "category": t["category"]}, ensure_ascii=False)

    ts = list(generate_tickets(20, seed=13))
    t = ts[0]
    bad = {3: (chat(t, [system, {"role": "user", "content": t["prompt"]}, {"role": "bot", "content": t["completion"]}]),
               "unknown role 'bot'"),
           6: (chat(t, {"role": "user", "content": t["prompt"]}), "'messages' is not a list"),
           9: (chat(t, [{"role": "user", "content": t["prompt"]}, {"role": "assistant"}]), "message without 'content'"),
           12: (chat(t, [system, {"role": "user", "content": t["prompt"]}]), "last message is not from the assistant"),
           15: (chat(ts[14])[:-2], "malformed JSON (truncated line)"),
           18: (json.dumps({"category": t["category"]}), "missing 'messages' field")}
    Path(path).write_text("".join((bad[i][0] if i in bad else chat(ts[i - 1])) + "\n" for i in range(1, 21)), "utf-8")
    return [(i, bad[i][1]) for i in sorted(bad)]


_ACCURACY = (0.95, 0.9, 0.85, 0.75, 0.6)
_URGENCY = {"low": 2, "normal": 3, "high": 4, "urgent": 5}


def generate_annotations(tickets: list[dict], *, annotators=("alice", "bob", "carol", "dave", "erin"),
                         n_items: int = 300, per_item: int = 3, seed: int = 7) -> list[dict]:
    """Long-format labels (category, and 1-5 urgency for all but the last annotator) with realistic noise."""
    annotators = list(annotators)
    if not 1 <= per_item <= len(annotators):
        raise ValueError(f"per_item must be between 1 and {len(annotators)}, got {per_item}")
    r = random.Random(seed).random
    acc = {a: _ACCURACY[k] if k < len(_ACCURACY) else 0.8 for k, a in enumerate(annotators)}
    noise = {a: 0.15 + 0.1 * k for k, a in enumerate(annotators)}  # chance of an off-by-one urgency
    urgency_raters = set(annotators[:-1]) if len(annotators) > 1 else set(annotators)
    rows = []
    for t in tickets[:n_items]:
        pool = annotators[:]
        for k in range(per_item):  # partial Fisher-Yates with random() only (stable across Python versions)
            j = k + int(r() * (len(pool) - k))
            pool[k], pool[j] = pool[j], pool[k]
        chosen = sorted(pool[:per_item], key=annotators.index)
        true = t["category"]
        for a in chosen:
            label = true
            if r() >= acc[a]:  # wrong: usually a confusable category, sometimes any other one
                others = (CONFUSIONS.get(true) if r() < 0.8 else None) or [c for c in CATEGORIES if c != true]
                label = others[int(r() * len(others))]
            rows.append({"item_id": t["id"], "annotator": a, "question": "category", "value": label})
        for a in chosen:
            if a in urgency_raters:
                v, u = _URGENCY.get(t["priority"], 3), r()
                v += (-1 if u < noise[a] / 2 else 1 if u < noise[a] else 0) + (1 if r() < 0.03 else 0)
                rows.append({"item_id": t["id"], "annotator": a, "question": "urgency", "value": min(5, max(1, v))})
    return rows


def make_demo_files(folder, *, n: int = 2000, seed: int = 7) -> dict[str, Path]:
    """Create folder with tickets.jsonl, the two malformed files and annotations.csv; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"tickets": folder / "tickets.jsonl", "malformed": folder / "tickets_malformed.jsonl",
             "malformed_chat": folder / "tickets_malformed_chat.jsonl", "annotations": folder / "annotations.csv"}
    write_jsonl(paths["tickets"], n, seed=seed)
    write_malformed_jsonl(paths["malformed"])
    write_malformed_chat_jsonl(paths["malformed_chat"])
    rows = generate_annotations(list(generate_tickets(min(n, 300), seed=seed)), seed=seed)
    with open(paths["annotations"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["item_id", "annotator", "question", "value"])
        w.writeheader()
        w.writerows(rows)
    return paths
