"""A labelled test set for PII recall: 120 planted values in short support-ticket sentences.

Every value is synthetic (test card numbers, documentation IBANs and IP ranges, invented names and
addresses). ``CASES`` is a list of (entity type, value, sentence holding the value once); ``EVASIONS`` the
same with the value spelled to slip past a detector (``(at)``, zero-width characters, full-width or
spaced-out digits); ``BENIGN_DEV`` and ``BENIGN_TEST`` sentences with no PII at all (instructions, dates,
versions, order numbers), the first half used to choose the false-positive filters, the second not.
"""

from __future__ import annotations

NAMES = [
    "Maria Gonzalez", "John Smith", "Aisha Khan", "Wei Zhang", "Olga Petrova", "James O'Brien", "Priya Patel",
    "Lars Andersen", "Fatima Al-Sayed", "Kenji Watanabe", "Emily Clarke", "Carlos Mendes", "Sophie Martin",
    "David Cohen", "Ngozi Okafor", "Hans Müller", "Anna Kowalski", "Tom Baker", "Isabella Rossi",
    "Mohammed Rahman", "Chloe Dubois", "Lucas Silva", "Grace Lee", "Ivan Horvat", "Sara Lindqvist", "Daniel Kim",
    "Amelia Brown", "Mateo Garcia", "Hannah Schmidt", "Robert Johnson",
]
NAME_CONTEXTS = [
    "Customer {} wrote in about a late parcel.",
    "Please ask {} to call back tomorrow morning.",
    "Ticket opened by {} yesterday evening.",
    "{} says the app crashes on login.",
    "Refund approved for {} after review.",
]
EMAILS = [
    "maria.gonzalez@example.com", "jsmith@example.org", "aisha.k@mail.example.co.uk", "wei_zhang@example.net",
    "olga+orders@example.com", "james.obrien@example.ie", "priya@example.in", "lars.andersen@example.dk",
    "f.alsayed@example.ae", "kenji.w@example.jp", "emily.clarke@support.example.com", "cmendes@example.com.br",
    "sophie.martin@example.fr", "dcohen@example.org", "ngozi.okafor@example.com", "hans.mueller@example.de",
    "anna.k@example.pl", "tbaker99@example.com", "irossi@example.it", "m.rahman@example.co.uk",
]
EMAIL_CONTEXTS = ["Reply to {} with the tracking number.", "My email is {}.", "Contact: {}", "CC {} on the refund."]
PHONES = [
    "(212) 555-0187", "212-555-0143", "+1 415 555 0199", "+44 20 7946 0958", "+49 30 901820", "415.555.0123",
    "+1-202-555-0171", "(646) 555-0112", "+33 1 23 45 67 89", "+61 2 9374 4000", "020 7946 0321",
    "+1 (312) 555-0148", "718-555-0199", "+972 3 123 4567", "+91 22 2778 8000", "(305) 555-0117",
    "+1 617 555 0135", "+55 11 3456 7890", "503-555-0160", "+1 604 555 0102",
]
PHONE_CONTEXTS = ["Call me at {} after 5pm.", "My phone number is {}.", "Reach the customer on {}.", "Tel: {}"]
CARDS = [
    "4111 1111 1111 1111", "4012888888881881", "5555-5555-5555-4444", "5105105105105100", "3782 822463 10005",
    "371449635398431", "6011 1111 1111 1117", "6011000990139424", "3530111333300000", "4242 4242 4242 4242",
    "4000056655665556", "5200828282828210", "2223003122003222", "30569309025904", "3566002020360505",
]
CARD_CONTEXTS = ["I was charged twice on card {}.", "Card number: {}", "Please refund to {} instead."]
IBANS = [
    "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32", "FR1420041010050500013M02606",
    "ES9121000418450200051332", "IT60X0542811101000000123456", "NL91ABNA0417164300", "BE68 5390 0754 7034",
    "CH9300762011623852957", "AT611904300234573201", "PL61109010140000071219812874",
    "SE4550000000058398257466", "DK5000400440116243", "NO9386011117947", "FI2112345600000785",
    "IE29AIBK93115212345678",
]
IBAN_CONTEXTS = ["Send the refund to IBAN {}.", "My bank account is {}.", "Transfer to {} please."]
SSNS = [
    "536-22-8726", "372-41-9083", "601-18-2745", "455-67-1290", "284-93-5521", "709-12-3348", "518-30-6672",
    "243-76-9915", "662-05-4837", "391-58-2204",
]
SSN_CONTEXTS = ["My SSN is {}.", "Social security number: {}"]
IPS = [
    "192.168.10.24", "10.0.0.7", "172.16.254.1", "203.0.113.45", "8.8.4.4", "2001:db8::ff00:42:8329",
    "198.51.100.7", "100.64.12.9", "fe80::1ff:fe23:4567:890a", "45.33.32.156",
]
IP_CONTEXTS = ["The login came from {} at 3am.", "Blocked address: {}"]


def _cases(entity: str, values: list[str], contexts: list[str]) -> list[tuple[str, str, str]]:
    return [(entity, v, contexts[i % len(contexts)].format(v)) for i, v in enumerate(values)]


CASES: list[tuple[str, str, str]] = [
    *_cases("PERSON", NAMES, NAME_CONTEXTS),
    *_cases("EMAIL_ADDRESS", EMAILS, EMAIL_CONTEXTS),
    *_cases("PHONE_NUMBER", PHONES, PHONE_CONTEXTS),
    *_cases("CREDIT_CARD", CARDS, CARD_CONTEXTS),
    *_cases("IBAN_CODE", IBANS, IBAN_CONTEXTS),
    *_cases("US_SSN", SSNS, SSN_CONTEXTS),
    *_cases("IP_ADDRESS", IPS, IP_CONTEXTS),
]

BENIGN_DEV = [
    # the filters that cut false positives were chosen looking at these sentences only
    "The parcel left the warehouse on Monday and should arrive within five business days.",
    "Refunds are issued to the original payment method within 3 days.",
    "Version 2.4.1 fixed the crash when opening the settings page.",
    "Our order number format is ORD-2024-000123; quote it in every reply.",
    "The app supports dark mode on Android and iOS.",
    "Please restart the router and wait 30 seconds before trying again.",
    "Billing questions go to the finance team; technical ones to support.",
    "The discount code SPRING10 expired at the end of March.",
    "We ship to 42 countries from two warehouses.",
    "Error 502 means the upstream service did not answer in time.",
    "Summarize the text.",
    "The card on file (expiry 09/27) was declined by the bank.",
    "Translate the paragraph into French and keep the bullet points.",
    "Classify the ticket as billing, shipping or technical.",
    "Extract the order number and the delivery date from the email.",
    "Invoice 2024-0117 totals 1,250.00 EUR, due within 30 days.",
    "Our office hours are 9:00 to 17:30, Monday to Friday.",
    "Build 20240315.4 passed 1,204 of 1,210 tests.",
    "Reply with a short, friendly answer and sign it as the support team.",
    "Rate the answer from 1 to 10 and explain the score.",
    "The meeting moved from room 4B to the main hall at 14:00.",
    "Tracking number 1Z 999 AA1 01 2345 6784 shows the parcel in transit.",
    "Set the timeout to 300 seconds and retry three times.",
    "Draft a reply that apologises for the delay.",
    "Please review the attached contract before Thursday.",
    "SKU 4006381333931 is out of stock until next week.",
    "Rewrite the paragraph in plain English for customers.",
    "The warranty covers parts for 24 months from delivery.",
    "Check whether the refund was already issued.",
    "Sort the list by date, newest first.",
]
BENIGN_TEST = [
    # not looked at while choosing the filters: the false-positive rate on them is the held-out figure
    "Write a haiku about the sea.",
    "Answer in two sentences and avoid jargon.",
    "The new firmware (build 7.1.3) improves battery life by 12%.",
    "Shipping to Norway takes 4 to 6 working days.",
    "Explain the difference between a refund and a chargeback.",
    "Highlight the three most important risks in the report.",
    "Order 88213 was split into two parcels.",
    "Our support line is open 24/7 during the holidays.",
    "Convert the table into CSV with a header row.",
    "Compare the two offers and recommend one.",
    "List the action items from the meeting notes.",
    "The subscription renews on 01/04 unless cancelled.",
    "Use the staging cluster for load tests, never production.",
    "Generate three subject lines for the newsletter.",
    "Identify the language of each message.",
    "The package weighs 2.4 kg and measures 30 x 20 x 10 cm.",
    "Give the customer a 10% discount code for the next order.",
    "Proofread the announcement and fix the typos.",
    "The API returns HTTP 429 when the rate limit is reached.",
    "Close the ticket once the customer confirms the fix.",
    "Estimate the delivery date from the dispatch date.",
    "Group the complaints by product category.",
    "Respond politely and offer a callback.",
    "The report covers Q3 2024, July to September.",
    "Keep the answer under 100 words.",
    "Mark the invoice as paid after the transfer clears.",
    "Describe the bug, the expected result and the actual result.",
    "Detect duplicates in the mailing list.",
    "The form accepts dates as DD/MM/YYYY.",
    "Summarise the customer's complaint in one line.",
]
BENIGN = BENIGN_DEV + BENIGN_TEST

# Evasions: the value as written in the text (what must disappear), in a sentence holding it once.
EVASIONS: list[tuple[str, str, str]] = [
    ("EMAIL_ADDRESS", "maria.gonzalez(at)example(dot)com", "Write to maria.gonzalez(at)example(dot)com today."),
    ("EMAIL_ADDRESS", "jsmith [at] example [dot] org", "Contact: jsmith [at] example [dot] org"),
    ("EMAIL_ADDRESS", "priya at example dot in", "My email is priya at example dot in, thanks."),
    ("EMAIL_ADDRESS", "lars.andersen at example.dk", "Reach me via lars.andersen at example.dk please."),
    ("EMAIL_ADDRESS", "kenji.w\u200b@example.jp", "CC kenji.w\u200b@example.jp on the refund."),
    ("EMAIL_ADDRESS", "hans.mu\u200beller@exam\u200bple.de", "Email: hans.mu\u200beller@exam\u200bple.de"),
    ("EMAIL_ADDRESS", "ｏｌｇａ＠ｅｘａｍｐｌｅ．ｃｏｍ", "My email is ｏｌｇａ＠ｅｘａｍｐｌｅ．ｃｏｍ."),
    ("EMAIL_ADDRESS", "tbaker99{at}example{dot}com", "Reply to tbaker99{at}example{dot}com with the label."),
    ("CREDIT_CARD", "４１１１ １１１１ １１１１ １１１１",
     "I was charged twice on card ４１１１ １１１１ １１１１ １１１１."),
    ("CREDIT_CARD", "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "Card number: 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"),
    ("CREDIT_CARD", "5555 - 5555 - 5555 - 4444", "Please refund to 5555 - 5555 - 5555 - 4444 instead."),
    ("CREDIT_CARD", "4242\u200b4242\u200b4242\u200b4242", "Card number: 4242\u200b4242\u200b4242\u200b4242"),
    ("CREDIT_CARD", "3 7 8 2 8 2 2 4 6 3 1 0 0 0 5", "I was charged twice on card 3 7 8 2 8 2 2 4 6 3 1 0 0 0 5."),
    ("PHONE_NUMBER", "2 1 2 5 5 5 0 1 8 7", "Call me at 2 1 2 5 5 5 0 1 8 7 after 5pm."),
    ("PHONE_NUMBER", "（２１２）５５５－０１４３", "My phone number is （２１２）５５５－０１４３."),
    ("PHONE_NUMBER", "+1 4 1 5 5 5 5 0 1 9 9", "Reach the customer on +1 4 1 5 5 5 5 0 1 9 9."),
    ("PHONE_NUMBER", "415.555.01\u200b23", "Tel: 415.555.01\u200b23"),
    ("US_SSN", "5 3 6 - 2 2 - 8 7 2 6", "My SSN is 5 3 6 - 2 2 - 8 7 2 6."),
    ("IP_ADDRESS", "１９２.１６８.１０.２４", "The login came from １９２.１６８.１０.２４ at 3am."),
    ("IBAN_CODE", "DE89 3704 0044 0532 0130 00".replace(" ", "\u200b"), "Send the refund to IBAN "
     + "DE89 3704 0044 0532 0130 00".replace(" ", "\u200b") + "."),
]
