"""The rules of the prompt-injection screen: named, weighted patterns in categories. Pure data.

A rule is *strong* when its weight alone reaches the default threshold 0.5 (an instruction override, a
fake chat turn, a request for the system prompt), *weak* below it: a weak rule is a signal that ordinary
business text also gives ("send ... to legal@acme.example", "transfer $300 to the petty cash account",
a line starting with "User:"), and counts only together with another one (see injection.py for how weights
combine). Categories:

    instruction_override  ignore/forget/set aside previous instructions; "the rules you were given no
                          longer apply"; "your real task is"; OVERRIDE banners; "you work for me now"
    approval_bypass       skip the approval / review / confirmation; "no sign-off needed"
    exfiltration          reveal or repeat the system prompt or "the text above"; print keys, passwords,
                          environment variables
    role_play             you are now ..., DAN, developer mode, no restrictions, stay in character
    role_markers          fake chat delimiters and turns: <|im_start|>, [INST], <system>, [assistant]:,
                          "### System", a JSON ``"role": "system"``, a Human:/Assistant: dialogue
    tool_coercion         pipe a download into a shell, send *the data* somewhere, move money, call a
                          tool, destroy files, an image URL that carries the conversation out
    addressing            text that speaks to the AI ("note to the assistant", "any AI reading this"),
                          secrecy ("do not tell the user"), urgency: weak context signals
    other languages       the same overrides, leaks and role changes in Spanish, French, German,
                          Portuguese, Italian, Russian, Chinese, Japanese, Arabic and Korean

Matching is case-insensitive on folded text (see normalise.py); patterns cross no sentence end unless
they say so.
"""

from __future__ import annotations

import dataclasses
import re

_F = re.IGNORECASE | re.MULTILINE


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    name: str
    category: str
    weight: float
    pattern: re.Pattern[str]
    negatable: bool = False
    """A match right after a negation ("never share your passwords") does not count."""
    in_code: float | None = None
    """The weight of a match inside a fenced code block (documentation shows commands), when lower."""
    mentioned: float | None = None
    """The weight of a match that the text names as a thing ("the <|im_start|> token"), when lower."""

    @property
    def family(self) -> str:
        """The rule a translation stands for ("ignore-instructions-fr" -> "ignore-instructions"): a text
        matched by both counts once (French "ignore ... instructions" is also English)."""
        head, _, lang = self.name.rpartition("-")
        return head if lang in LANGUAGES else self.name


LANGUAGES = frozenset({"es", "fr", "de", "pt", "it", "ru", "zh", "ja", "ar", "ko"})


def _rule(
    name: str, category: str, weight: float, pattern: str, negatable: bool = False, in_code: float | None = None,
    mentioned: float | None = None,
) -> Rule:
    return Rule(name, category, weight, re.compile(pattern, _F), negatable, in_code, mentioned)


# -- lexicons ------------------------------------------------------------------------------------------
# What the model was told.
_ORDERS = (r"(instructions?|prompts?|rules|guidelines|guidance|directions|directives|orders|commands|briefing|brief|"
           r"configuration|config|set-?up|constraints|restrictions|limits|polic(y|ies)|programming|persona|"
           r"system\s+prompt|system\s+message|task|assignment)")
# Setting it aside.
_IGNORE = (r"(ignore|disregard|forget|override|bypass|abandon|discard|drop|set\s+aside|put\s+aside|throw\s+away|"
           r"never\s*mind|pay\s+no\s+attention\s+to|stop\s+(following|obeying)|no\s+longer\s+(follow|obey)|"
           r"(do\s+not|don'?t)\s+(follow|obey|do)|put\s+\w+\s+on\s+hold)")
# Declaring it void.
_VOID = (r"(no\s+longer\s+(appl(y|ies)|valid|matters?|in\s+(effect|force))|(do|does)\s*(n'?t|\s+not)\s+(apply|matter)|"
         r"(is|are|were|was|have\s+been|has\s+been)\s+(now\s+|only\s+|just\s+)?(void|null|revoked|rescinded|"
         r"superseded|disabled|invalid|withdrawn|outdated|obsolete|cancell?ed|suspended|paused|lifted|expired|"
         r"switched\s+off|turned\s+off|a\s+test|a\s+mistake|a\s+placeholder|wrong|fake|irrelevant|written\s+by\s+mistake|"
         r"on\s+hold)|(void|revoked|rescinded|superseded|obsolete|expired)\b)")
# The model, in the second person.
_YOU = r"(your|you\s+(were|have\s+been|'ve\s+been|received|got|started|had)|you're|you\s+are)"
_LEAK_VERB = (r"(reveal|print|show|output|repeat|leak|disclose|tell\s+me|display|dump|echo(\s+back)?|copy(\s+out)?|"
              r"(respond|reply|answer)\s+with|"
              r"quote|write\s+out|give\s+me|list|recite|restate|append|include|translate|spell\s+out|send\s+me|share|"
              r"paste|post)")
_SECRET = (r"(system\s+(prompt|message|instructions)|(your|the)\s+(\w+\s+){0,2}(instructions|prompt|rules|guidelines|"
           r"configuration|setup|brief(ing)?)|(initial|original|hidden)\s+(prompt|instructions|configuration|rules)|"
           r"(instructions|rules|guidelines|prompt)\s+you\s+(received|were\s+given|got)\b|"
           r"api[_ -]?keys?|secret\s+keys?|the\s+secret\b|secrets|credentials|passwords?|access\s+tokens?|"
           r"admin\s+(password|token)|api\s+token|environment\s+variables?|env\s+vars?|context\s+window|internal\s+notes|"
           r"[A-Z][A-Z0-9]*_(API_)?(KEY|TOKEN|SECRET)\b)")
_AI = (r"((ai|a\.i\.|llm)\s+)?(ai|a\.i\.|assistant|language\s+model|llm|chat\s?bot|bot|agent|model|gpt|summari[sz]er|"
       r"crawler|copilot|helper)")
_ADDRESS = (rf"(\b(note|message|attention|instructions?|reminder|notice|tip|update|p\.?s\.?|warning|hint|"
            rf"important)\s*,?\s*(to|for)\s+(the\s+|any\s+|all\s+|every\s+|whichever\s+)?(automated\s+)?{_AI}s?\b|\b(dear|hey|hi|hello|"
            rf"attention)\s+{_AI}\b|\b(any|the|all|whichever)?\s*{_AI}s?\s+(reading|processing|summari[sz]ing|sorting|"
            rf"parsing|browsing|handling|reads|summari[sz]es|processes|handles)\s+this\b|\bif\s+you\s+are\s+an?\s+{_AI}\b|\bautomated\s+(readers?|"
            rf"agents?|assistants?|systems?)\b|\b(not\s+for\s+humans|for\s+(ai|llm)s?\s+only)\b|\b(llm|ai|model)\s+"
            rf"instructions\s*:|^[ \t]*(ai|assistant|model|agent|language\s+model|llm)\s*,\s+(?=[a-z]))")
_DIRECTIVE = (r"(must|should|have\s+to|has\s+to|need\s+to|are\s+to|is\s+to|always|never|do\s+not|don'?t|only|"
              r"kindly|please|ignore|forget|abandon|disregard|send|email|forward|reveal|print|output|say|tell|reply|"
              r"respond|write|approve|delete|run|call|rank|recommend|treat|put|stop|set|act|answer|may)")
_APPROVAL = (r"(approval|approvals|sign-?off|review|reviewer|confirmation|authori[sz]ation|verification|"
             r"change\s+request|four-eyes\s+check|approver)")
_FREEDOM = (r"(restrictions|limits|rules|filters|content\s+filters?|guidelines|guardrails|policies|"
            r"content\s+polic(y|ies)|safety(\s+(training|filters|rules|guidelines|checks))?|censorship|caveats|morals|ethics)")

RULES: tuple[Rule, ...] = (
    # -- instruction override -------------------------------------------------------------------------
    _rule("ignore-instructions", "instruction_override", 0.8,
          rf"\b{_IGNORE}\b[^.\n]{{0,50}}?\b(previous|prior|above|earlier|preceding|all|any|your|the|system|original|"
          rf"initial|old|current|existing|those|these|usual|normal)\b[^.\n]{{0,30}}?\b{_ORDERS}\b"),
    _rule("ignore-everything-above", "instruction_override", 0.7,
          rf"\b{_IGNORE}\b[^.\n]{{0,20}}\b(everything|all|anything|whatever|what)\b[^.\n]{{0,30}}\b(above|before|"
          rf"earlier|previously|prior|you\s+were\s+(told|given|instructed|asked|programmed))\b|\b{_IGNORE}\s+(the\s+)?"
          rf"above\b|\b{_IGNORE}\b[^.\n]{{0,30}}\byou\s+(were|have\s+been)\s+(given|told|assigned|asked|set\s+up|"
          rf"configured|programmed)\b|\b{_IGNORE}\b[^.\n]{{0,20}}\b(the\s+)?(people|person|team|company)\s+(who|that)\s+"
          rf"(deployed|built|configured|made)\s+you\b"),
    _rule("instructions-void", "instruction_override", 0.7,
          rf"\b{_YOU}\b[^.\n]{{0,40}}?\b{_ORDERS}\b[^.\n]{{0,50}}?\b{_VOID}|\b{_ORDERS}\b[^.\n]{{0,30}}?\byou\b[^.\n]{{0,40}}?"
          rf"\b{_VOID}|\b(everything|whatever|anything|all)\s+you\s+were\s+(told|given|programmed\s+with|set\s+up\s+with)"
          rf"\b[^.\n]{{0,30}}\b{_VOID}"),
    _rule("everything-before-void", "instruction_override", 0.6,
          r"\b(everything|anything|whatever|all)\b[^.\n]{0,40}\b(above|before|prior|earlier)\b[^.\n]{0,30}"
          r"\b(is|are|was)\s+(now\s+)?(void|null|cancell?ed|a\s+test|obsolete|invalid|irrelevant)|\btreat\s+"
          r"(everything|all|anything)\b[^.\n]{0,30}\b(above|before)\b[^.\n]{0,20}\bas\s+(void|null|invalid|irrelevant)"
          r"|\bpretend\s+(the|this)\s+conversation\b[^.\n]{0,20}\bnever\s+happened\b"),
    _rule("real-task", "instruction_override", 0.5,
          r"\b(your|the)\s+(real|actual|true|genuine|new|only)\s+(task|goal|job|objective|mission|instructions?|"
          r"assignment|priority|request|rule|directive|one)s?\s*(is|are|:|now\b|follows\b)|\bnew\s+(priority\s+)?(task|"
          rf"instructions?|rules?|directive|system\s+prompt)(\s+for\s+(the\s+)?{_AI})?\s*:|\byour\s+new\s+(goal|task|"
          r"job|role|purpose)\b|\bwhat\s+you\s+(must|will|should)\s+do\s+instead\b"),
    _rule("override-banner", "instruction_override", 0.7,
          r"\b(begin|start|end)\s+((admin|system|priority|developer)\s+)?override\b|\b(admin|system|priority|developer|"
          r"emergency|root)\s+override\b|\boverride\s+(mode|active|enabled|engaged)\b|\boverride\s+(previous|prior|"
          r"earlier|all|your)\b"),
    _rule("obey-me", "instruction_override", 0.5,
          r"\byou\s+(now\s+)?(work|answer)\s+(for|to)\s+me\b|\b(you\s+)?(must|will|shall)\s+obey\b|\bobey\s+(me|only)\b|"
          r"\bdo\s+(exactly\s+)?(what|as)\s+(i|this\s+(document|page|file|message))\s+(say|says|tell)|\bthe\s+only\s+rule"
          r"\s+is\b|\bact\s+freely\b|\bi\s+(give|make)\s+the\s+(orders|rules)\b|\bi\s+am\s+your\s+(administrator|admin|"
          r"developer|creator|owner|operator)\b|\b(stop|quit)\s+(obeying|listening\s+to)\b"),
    _rule("comply-all", "instruction_override", 0.45,
          r"\bcomply\s+with\s+(all|every|any)\b|\bwithout\s+(refusing|refusal|any\s+warnings?|adding\s+warnings|"
          r"(your\s+)?(usual\s+)?caveats)\b|\bnever\s+(refuse|decline)s?\b|\bgrant\s+(every|all|any)\s+requests?\b|"
          r"\bunconditionally\b|\b(answer|respond\s+to)\s+every(thing|\s+question)\b[^.\n]{0,40}\b(declin|refus|normally)"
          r"|\bgo\s+beyond\s+your\s+(normal\s+|usual\s+)?limits\b"),
    _rule("from-now-on", "instruction_override", 0.35,
          r"\b(from\s+now\s+on|from\s+this\s+(point|turn|message)(\s+(on|forward))?|from\s+here(\s+on)?|henceforth|"
          r"for\s+the\s+rest\s+of\s+this\s+(chat|conversation|session))\b,?\s+(you\b|i\b|respond|answer|reply|always|"
          r"only|act)"),
    _rule("do-instead", "instruction_override", 0.35,
          r"\binstead\b[^.\n]{0,15}\b(write|say|reply|respond|output|tell|email|send)\b|\b(write|say|reply|respond|"
          r"email|send|forward)\b[^.\n]{0,40}\binstead\b|\bwhatever\s+your\s+(brief|instructions|task|prompt)\s+says\b"),
    _rule("regardless-of-instructions", "instruction_override", 0.6,
          rf"\b(regardless\s+of|whatever|no\s+matter\s+what|irrespective\s+of|in\s+spite\s+of)\s+(what\s+)?your\s+"
          rf"(\w+\s+)?{_ORDERS}\b"),
    _rule("ignore-user", "instruction_override", 0.5,
          r"\b(ignore|disregard|forget)\s+(the\s+)?user'?s?\b(\s+(question|request|message|input))?"),
    # -- approval bypass -------------------------------------------------------------------------------
    _rule("skip-approval", "approval_bypass", 0.6,
          rf"\b(skip|bypass|circumvent|avoid|omit|override|(no\s+need|don'?t\s+need|do\s+not\s+need)\s+(to\s+(wait\s+"
          rf"for|involve|ask\s+for|get)|for)|(don'?t|do\s+not)\s+(wait\s+for|ask\s+for|open|involve)|without\s+(waiting\s+"
          rf"for|asking\s+for|any|a|an|getting))\s*(the\s+|a\s+|an\s+|any\s+)?(human\s+|user'?s?\s+|manager'?s?\s+|her\s+|"
          rf"his\s+|their\s+)?{_APPROVAL}(\s+step)?\b"),
    _rule("approval-not-needed", "approval_bypass", 0.6,
          rf"\b{_APPROVAL}\s+(step\s+)?(is\s+|are\s+)?(not\s+|no\s+longer\s+)(needed|required|necessary)\b|\bno\s+(human\s+)?"
          rf"{_APPROVAL}\s+(is\s+)?(needed|required|necessary)\b|\b(treat|consider|mark)\b[^.\n]{{0,30}}\bas\s+"
          rf"(pre-?approved|approved|authori[sz]ed)\b|\bpre-?(approved|authori[sz]ed)\b[^.\n]{{0,60}}\b(no\s+need|not\s+"
          rf"required|skip|without|execute|proceed)\b|\bno\s+need\s+to\s+wait\s+for\s+(a\s+|the\s+)?(manager|human|"
          rf"approver|reviewer)\b|\bmerge\s+it\s+yourself\b"),
    # -- exfiltration ----------------------------------------------------------------------------------
    _rule("reveal-prompt", "exfiltration", 0.7, rf"\b{_LEAK_VERB}\b[^.\n]{{0,50}}?\b{_SECRET}", negatable=True),
    _rule("repeat-above", "exfiltration", 0.7,
          r"\b(repeat|copy|quote|print|output|echo|reproduce|write\s+out|recite|show|restate)\b[^.\n]{0,50}\b(everything|"
          r"all|the\s+(text|words|content|lines?|message)s?|what\s+(is|was)\s+written)\b[^.\n]{0,40}\b(above|before\s+"
          r"this|preceding|prior\s+to\s+this|at\s+the\s+(top|start|beginning))\b|\b(repeat|copy|quote|print|output)\s+"
          r"(the\s+)?(words|text|lines)\s+above\b|\bwhat\s+(is|was)\s+(written|said)\s+(at\s+the\s+(very\s+)?(top|start|"
          r"beginning)|above|before)\b|\b(restate|repeat|quote|recite)\b[^.\n]{0,30}\bword\s+for\s+word\b|\bthe\s+"
          r"message\s+that\s+(set\s+you\s+up|configured\s+you)\b"),
    _rule("ask-instructions", "exfiltration", 0.5,
          r"\bwhat\s+(are|were|is)\s+your\s+(original\s+|initial\s+|system\s+|hidden\s+)?(instructions|rules|prompt|"
          r"guidelines)\b|\bwhat\s+(instructions|rules|guidelines)\s+(were|have)\s+you\s+(been\s+)?(given|told)\b|"
          r"\bwhat\s+(is|was)\s+(written\s+)?in\s+your\s+(system|initial)\s+(prompt|message)\b|\bwhat\s+(did|were)\s+"
          r"you(r\s+\w+)?\s+(told|tell\s+you)\s+(not\s+)?to\s+(never\s+)?(reveal|tell|say|share)\b|\b(you\s+were|your\s+"
          r"\w+\s+told\s+you)\s+(told\s+)?(not|never)\s+to\s+(tell|reveal|share|say)\b"),
    _rule("context-secrets", "exfiltration", 0.5,
          r"\b(contents?|everything)\s+of\s+(its|your|the)\s+(context|memory|prompt|instructions)\b|\bincluding\s+"
          r"(any\s+|the\s+)?(secrets|hidden\s+parts|credentials|passwords)\b"),
    _rule("sensitive-files", "exfiltration", 0.6,
          r"(~/\.ssh|\bid_(rsa|ed25519|ecdsa)\b|/etc/(passwd|shadow)\b|\.aws/credentials|\bprivate\s+key\b)"
          r"|\b(copy|send|upload|cat|post|share|move|leak)\b[^.\n]{0,40}\b(ssh|deploy)\s+keys?\b"),
    # -- role play -------------------------------------------------------------------------------------
    _rule("you-are-now", "role_play", 0.5,
          r"\byou\s+are\s+(now|no\s+longer)\b|\byou'?re\s+(now\b|no\s+longer\b|\w+\s+now\b)|\bfrom\s+(now\s+on|this\s+"
          r"turn)\s+you\s*('re|are|will\s+be|will\s+act)\b|\byou\s+will\s+(now\s+)?act\s+as\b|\byour\s+character\s+is\b"
          r"|\bswitch\s+to\s+your\s+\w+\s+(personality|persona|self|mode)\b"),
    _rule("jailbreak", "role_play", 0.6,
          r"\b((?-i:DAN)|do\s+anything\s+now|developer\s+mode|jailbreak(ed|ing)?|jailbroken|god\s+mode|(unrestricted|"
          r"unfiltered|uncensored|unlocked|sandbox|maintenance|debug|evil|chaos)\s+(mode|personality|persona|version)|"
          r"uncensored|stay\s+in\s+character|(respond|answer|reply)\s+(as\s+two\s+\w+|twice)|two\s+(personas|personalities)|"
          r"breaks?\s+(every|all|the)\s+rules?|(safety|content)\s+(filters?|rules|"
          r"checks|layer)\s+(are\s+|is\s+)?(disabled|off|switched\s+off)|filter\s+layer\s+is\s+(switched\s+)?off|"
          r"disabled?\s+my\s+safety|ignore\s+(the\s+|all\s+)?safety\s+(checks|rules|filters))\b"),
    _rule("no-limits", "role_play", 0.5,
          rf"\b(without|no|never\s+(been\s+)?given\s+any|(don'?t|doesn'?t|do\s+not)\s+have(\s+any)?)\s+(any\s+)?(\w+\s+)?"
          rf"{_FREEDOM}\b|\b(has|have|with)\s+no\s+{_FREEDOM}\b|\b(your\s+)?{_FREEDOM}\s+(don'?t|do\s+not|doesn'?t)\s+"
          rf"(matter|apply)\b|\bif\s+you\s+had\s+no\s+{_FREEDOM}\b|\bgo\s+beyond\s+your\s+(normal\s+|usual\s+)?"
          rf"({_FREEDOM}|limitations|boundaries)\b"),
    _rule("pretend", "role_play", 0.5,
          r"\b(pretend|act|behave|roleplay|role-play|play|imagine|simulate)\s+(to\s+be|as|like|that\s+you\s+are|you\s+"
          r"are|you'?re|the\s+role\s+of)\s+(an?\s+|the\s+)?[^.\n]{0,25}\b(unrestricted|unfiltered|uncensored|evil|"
          r"malicious|hacker|rogue|jailbroken|without\s+(rules|limits|filters)|no\s+(rules|limits|filters))\b"),
    _rule("let-us-play", "role_play", 0.35,
          r"\blet'?s\s+(play\s+a\s+game|role-?play|pretend)\b|\bhypothetically\b[^.\n]{0,40}\byou\b|\bact\s+as\s+my\s+(late\s+|dead\s+|deceased\s+)?(grand)?(mother|"
          r"father|ma|pa)\b"),
    # -- role markers ----------------------------------------------------------------------------------
    _rule("chat-delimiters", "role_markers", 0.6,
          r"<\|(im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id)\|>|\[/?INST\]|"
          r"<</?SYS>>|<(start|end)_of_turn>|</?(system|assistant|user)>|"
          r"^[ \t]*#{1,6}[ \t]*(system|assistant|instruction|"
          r"response)s?[ \t]*:?[ \t]*$|^[ \t]*\[(system|assistant|user|inst|ai)\][ \t]*(:|\(#)", mentioned=0.2),
    _rule("json-role", "role_markers", 0.5, r"[\"']role[\"']\s*:\s*[\"'](system|developer)[\"']"),
    _rule("turn-marker", "role_markers", 0.3, r"^[ \t]*\**(system|assistant|ai|user|human)\**[ \t]*:"),
    _rule("inline-turn", "role_markers", 0.3,
          r"(?-i:\b(SYSTEM|ASSISTANT|USER|HUMAN)\b):\s+\w|\bend\s+of\s+(document|context|input)\b"),
    # -- tool coercion ---------------------------------------------------------------------------------
    _rule("shell-pipe", "tool_coercion", 0.6,
          r"\b(curl|wget|iwr|invoke-webrequest)\b[^|\n]{0,150}\|\s*(sudo\s+)?(ba|z|k)?sh\b|\b(ba)?sh\s+-c\s+[\"']?\$\("
          r"\s*(curl|wget)\b|\bpowershell\b[^\n]{0,20}\s-e(nc|ncodedcommand)?\s|\bnc\s+(-\w+\s+)*\d{1,3}(\.\d{1,3}){3}\s+"
          r"\d+|/dev/tcp/|\bos\.system\s*\([^)]{0,80}\b(curl|wget|nc|cat|rm)\b", in_code=0.3),
    _rule("destroy", "tool_coercion", 0.5,
          r"\brm\s+-(rf|fr)\s+(/|~|\*|\$HOME)(\s|$)|\b(delete|remove|wipe|erase)\s+(every|all)\s+(the\s+)?(files?|data|"
          r"records|repos?|emails|backups|projects?)\b|\bdelete\s+the\s+(project|repo(sitory)?|database)\b|\bforce-?push"
          r"\b|\bdrop\s+(table|database)\b", negatable=True, in_code=0.2),
    _rule("send-data", "tool_coercion", 0.5,
          r"\b(send|forward|e-?mail|post|upload|exfiltrate|leak|copy|transmit|paste|sync|reveal)\b[^.\n]{0,30}?\b(the\s+"
          r"data|all\s+(the\s+)?data|everything|the\s+(full\s+|entire\s+|whole\s+|complete\s+)?(conversation|chat|"
          r"history|inbox|context|transcript|database|address\s+book|contents?)(\s+history)?|(the\s+|all\s+|every\s+|the\s+"
          r"other\s+)?(customer|user|client|contact)s?'?s?'?\s+(records|data|list|database|emails|files|details|passwords|"
          r"addresses|inbox|profiles?|chat\s+(logs?|history))|all\s+(the\s+)?(emails|messages|records|files|contacts|"
          r"secrets|passwords|cookies|credentials)|every\s+(api\s+key|secret|password)|(the\s+|their\s+|the\s+user'?s\s+)?"
          r"(cookies|session\s+cookies?|credentials|passwords|saved\s+passwords|api\s+keys?|files|inbox|profile))\b"
          r"|\b(body|content|payload|message|text)\s+(set\s+)?(to|=)\s+(the\s+)?(whole|entire|full|complete)\s+"
          r"(conversation|chat|history|transcript|context)\b", negatable=True),
    _rule("send-external", "tool_coercion", 0.25,
          r"\b(send|forward|e-?mail|post|upload|transmit)\b[^.\n]{0,60}\b(to|at)\b[^.\n]{0,20}(https?://|"
          r"[\w.+-]+@[\w-]+\.[\w.]+|this\s+(address|url|webhook)|the\s+(webhook|url|address)\s+below)", negatable=True),
    _rule("move-money", "tool_coercion", 0.4,
          r"\b(transfer|wire|send|refund|pay|remit|move)\b[^.\n]{0,30}(\$|€|£|\b(usd|eur|gbp)\b|\d[\d,.]*\s*(dollars|"
          r"euros))[^.\n]{0,50}(\b(account|wallet|iban)\b|\b[A-Z]{2}\d{2}(\s?[A-Z0-9]{4}){3,})|\bamount\s*=\s*\d",
          negatable=True),
    _rule("call-tool", "tool_coercion", 0.3,
          r"\b(call|invoke|use|run|execute|trigger)\b[^.\n]{0,20}\b(the\s+|your\s+)?([a-z]+\s+)?(tool|function|api|"
          r"terminal|shell)\b|\b(call|invoke|run)\s+(the\s+)?[a-z]+_[a-z_]+\b", negatable=True),
    _rule("url-beacon", "tool_coercion", 0.6,
          r"(!?\[[^\]]*\]\(\s*)?https?://[^\s)]*[?&][\w-]*=[^\s)]*(\{|%7b|[A-Z]{3,}_[A-Z_]+)|https?://[^\s)]*[?&][\w-]*="
          r"\s*(\S*\s+)?(followed\s+by|with|plus|and\s+append|\+)\b[^.\n]{0,40}\b(user|e-?mail|password|cookie|session|"
          r"token|conversation|history|message|address|name)"),
    # -- addressing, secrecy, urgency (weak context signals) --------------------------------------------
    _rule("addressed-to-ai", "addressing", 0.35, _ADDRESS),
    _rule("addressed-directive", "addressing", 0.55, rf"{_ADDRESS}[^\n]{{0,60}}?\b{_DIRECTIVE}\b"),
    _rule("secrecy", "addressing", 0.35,
          r"\b(don'?t|do\s+not|never)\s+(tell|mention|inform|notify|alert|reveal\s+this\s+to)\b[^.\n]{0,25}\b(user|"
          r"anyone|customer|human|operator)\b|\bwithout\s+(telling|informing|notifying|alerting|mentioning)\b|\b(silently|"
          r"quietly|secretly|covertly)\b|\bsay\s+nothing\b|\bconfirm\s+nothing\b|\btell\s+no\s+one\b|\bkeep\s+this\s+"
          r"(secret|between\s+us|hidden)\b|\btell\s+the\s+user\s+(that\s+)?(the\s+task|it)\s+(failed|succeeded)\b|"
          r"\b(do\s+not|don'?t)\s+mention\s+this\s+(note|instruction|step)\b"),
    _rule("urgency", "addressing", 0.2,
          r"\b(immediately|right\s+(now|away)|without\s+delay|at\s+once)\b"),
)

# The same attacks in other languages (weights as their English counterparts).
MULTILINGUAL: tuple[Rule, ...] = (
    _rule("ignore-instructions-es", "instruction_override", 0.8,
          r"\b(ignora|ignore|ignoren|olvida|olvide|olviden|olvídate\s+de|descarta|omite|no\s+sigas|no\s+sigan|deja\s+de"
          r"\s+seguir|haz\s+caso\s+omiso\s+de)\b[^.\n]{0,40}\b(instrucciones|indicaciones|reglas|órdenes|directrices|"
          r"normas|todo\s+lo\s+anterior|lo\s+que\s+te\s+(dijeron|indicaron|ordenaron|pidieron))\b"
          r"|\b(instrucciones|indicaciones|reglas|órdenes)\b[^.\n]{0,40}\bya\s+no\s+(son\s+válidas|valen|aplican|"
          r"cuentan)\b"),
    _rule("role-es", "role_play", 0.5,
          r"\b(ahora\s+eres|eres\s+ahora|a\s+partir\s+de\s+ahora\s+(eres|serás|debes|responde))\b|\bsin\s+(ninguna\s+)?"
          r"(restricciones|límites|filtros|reglas)\b"),
    _rule("reveal-es", "exfiltration", 0.7,
          r"\b(revela|muestra|dime|imprime|repite|envía|reenvía|manda)\b[^.\n]{0,40}\b(prompt|mensaje\s+del\s+sistema|"
          r"instrucciones\s+del\s+sistema|contraseñas?|claves?\s+de\s+api|credenciales|historial|los\s+datos|"
          r"todos\s+los\s+correos)\b"),
    _rule("addressed-es", "addressing", 0.35, r"\b(nota\s+para|atención)\s+(el\s+|al\s+)?(asistente|modelo|bot|ia)\b"),
    _rule("ignore-instructions-fr", "instruction_override", 0.8,
          r"\b(ignore[zs]?|oublie[zs]?|ne\s+tiens\s+plus\s+compte|ne\s+tenez\s+plus\s+compte|fais\s+abstraction|"
          r"faites\s+abstraction|n'obéis\s+plus|n'obéissez\s+plus)\b[^.\n]{0,40}\b(instructions|consignes|règles|"
          r"directives|indications|ordres)\b|\b(tu\s+n'as|vous\s+n'avez)\s+plus\s+de\s+(règles|limites|consignes)\b"),
    _rule("role-fr", "role_play", 0.5,
          r"\b(tu\s+es|vous\s+êtes)\s+(maintenant|désormais|dorénavant)\b|\bsans\s+(aucune?\s+)?(restrictions?|limites?|"
          r"filtres?)\b"),
    _rule("reveal-fr", "exfiltration", 0.7,
          r"\b(révèle[zs]?|affiche[zs]?|montre[zs]?|donne[zs]?-moi|imprime[zs]?|répète[zs]?|envoie[zs]?)\b[^.\n]{0,40}"
          r"\b(message\s+système|prompt|invite\s+système|mot\s+de\s+passe|mots\s+de\s+passe|clés?\s+api|les\s+données|"
          r"l'historique)"),
    _rule("ignore-instructions-de", "instruction_override", 0.8,
          r"\b(ignoriere|ignorier|ignorieren\s+sie|vergiss|vergessen\s+sie|missachte|befolge\s+nicht)\b[^.\n]{0,40}"
          r"(anweisungen|regeln|instruktionen|vorgaben|befehle|systemprompt)|\b(anweisungen|regeln|vorgaben)\b[^.\n]{0,30}"
          r"\b(ignorieren|vergessen|gelten\s+nicht\s+mehr)\b|\b(nicht\s+mehr|nicht\s+länger)\s+an\s+(deine|ihre|die)\s+"
          r"(regeln|anweisungen|vorgaben)\b"),
    _rule("role-de", "role_play", 0.5,
          r"\bdu\s+bist\s+(jetzt|nun|ab\s+sofort)\b|\bab\s+sofort\s+(bist|hältst|antwortest|ignorierst)\s+du\b|"
          r"\bohne\s+(jegliche\s+)?(einschränkungen|regeln|filter|grenzen)\b"),
    _rule("reveal-de", "exfiltration", 0.7,
          r"\b(zeig|zeige|gib|verrate|nenne|schick|schicke|schickst|sende|überweise)\b[^.\n]{0,40}(systemprompt|"
          r"system-prompt|systemnachricht|passwort|passwörter|api-schlüssel|zugangsdaten|alle\s+daten|kundendaten)"),
    _rule("addressed-de", "addressing", 0.35,
          r"\b(hinweis|nachricht|achtung)\s+(an|für)\s+(den|die)\s+(assistenten|ki|bot)\b"),
    _rule("ignore-instructions-pt", "instruction_override", 0.8,
          r"\b(ignore|ignora|ignorem|esqueça|esqueca|esqueçam|desconsidere|descarte|não\s+siga|nao\s+siga|deixe\s+de"
          r"\s+seguir)\b[^.\n]{0,40}\b(instruções|instrucoes|regras|orientações|diretrizes|ordens)\b"),
    _rule("role-pt", "role_play", 0.5,
          r"\b(agora\s+você\s+é|você\s+agora\s+é|agora\s+tu\s+és|a\s+partir\s+de\s+agora\s+você)\b|\bsem\s+(nenhuma\s+)?"
          r"(restrições|restricoes|limites|filtros|regras)\b"),
    _rule("reveal-pt", "exfiltration", 0.7,
          r"\b(revele|mostre|diga|imprima|repita|envie|mande)\b[^.\n]{0,40}\b(prompt|mensagem\s+do\s+sistema|senhas?|"
          r"chaves?\s+de\s+api|credenciais|(os\s+)?dados\s+(do|dos|de)\s+\w+)"),
    _rule("ignore-instructions-it", "instruction_override", 0.8,
          r"\b(ignora|ignori|dimentica|dimentichi|trascura|non\s+seguire)\b[^.\n]{0,40}\b(istruzioni|regole|"
          r"indicazioni|direttive)\b"),
    _rule("reveal-it", "exfiltration", 0.7,
          r"\b(rivela|mostra|dimmi|stampa|invia)\b[^.\n]{0,40}\b(prompt|messaggio\s+di\s+sistema|password|dati)\b"),
    _rule("ignore-instructions-ru", "instruction_override", 0.8,
          r"\b(игнорируй|игнорируйте|проигнорируй|забудь|забудьте|не\s+обращай\s+внимания\s+на|не\s+слушай|"
          r"не\s+следуй)\b[^.\n]{0,40}\b(инструкц|указани|правил|команд|промпт)"),
    _rule("role-ru", "role_play", 0.5,
          r"(теперь\s+ты|ты\s+теперь)\b|без\s+(каких-либо\s+)?(ограничений|правил|фильтров)"),
    _rule("reveal-ru", "exfiltration", 0.7,
          r"\b(покажи|выведи|раскрой|отправь|перешли|скажи|пришли)\b[^.\n]{0,40}\b(промпт|системн\w*\s+(сообщени|"
          r"инструкц)|парол|данные|ключ)"),
    _rule("ignore-instructions-zh", "instruction_override", 0.8,
          r"(忽略|无视|忘记|忽视|不要理会|不要遵守|无需遵守)[^。\n]{0,12}(指令|指示|说明|规则|提示|要求)"),
    _rule("role-zh", "role_play", 0.5, r"(现在你是|你现在是|从现在起你|没有(任何)?限制|不受(任何)?限制)"),
    _rule("reveal-zh", "exfiltration", 0.7,
          r"(告诉我|显示|输出|泄露|打印|发送|发到)[^。\n]{0,20}(系统提示|提示词|密码|密钥|聊天记录)"),
    _rule("ignore-instructions-ja", "instruction_override", 0.8,
          r"(指示|命令|ルール|プロンプト|設定|指令)[^。\n]{0,12}(無視|忘れ)"),
    _rule("ignore-instructions-ar", "instruction_override", 0.8,
          r"(تجاهل|انس|إنس|لا\s+تتبع|لا\s+تلتزم)[^.\n]{0,40}(التعليمات|تعليمات|الأوامر|القواعد|الإرشادات)"),
    _rule("reveal-ar", "exfiltration", 0.7,
          r"(اكشف|أظهر|اعرض|أرسل|اطبع)[^.\n]{0,40}(موجه\s+النظام|رسالة\s+النظام|كلمة\s+المرور|كلمات\s+المرور|المفاتيح)"),
    _rule("ignore-instructions-ko", "instruction_override", 0.8,
          r"(지시|명령|규칙|지침|프롬프트)[^.\n]{0,15}(무시|잊어)"),
    _rule("reveal-ko", "exfiltration", 0.7, r"(시스템\s*프롬프트|비밀번호|암호|API\s*키)[^.\n]{0,15}(보여|알려|출력)"),
    _rule("reveal-ja", "exfiltration", 0.7,
          r"(システムプロンプト|パスワード|秘密鍵|APIキー)[^。\n]{0,12}(教え|表示|見せ|出力)"),
    _rule("role-ja", "role_play", 0.5, r"(制限のない|制限なし|ルールのない)"),
)
