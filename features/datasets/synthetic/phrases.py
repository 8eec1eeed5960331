"""Text templates of the synthetic community: titles, body frames, per-dimension slot sentences,
image-caption phrases, chit-chat distractors and platform-boilerplate hashtags.

Values of one dimension always appear in that dimension's slots ("in {v}", "by {v}", "for {v}"), so a
handbook builder can recover dimensions from co-occurrence. ``{v}`` is a surface form, ``{item}`` the
note's noun ("pair", "serum"). No template mentions a value on its own; :func:`generic_texts` lists
every fixed text so a test can check that.
"""

from __future__ import annotations

__all__ = [
    "BODY_FRAMES",
    "BOILERPLATE",
    "CAPTION_FRAMES",
    "CLOSERS",
    "DIMENSION_PHRASES",
    "DISTRACTORS",
    "OPENERS",
    "TITLE_EMOJI",
    "TITLE_TEMPLATES",
    "generic_texts",
]

# Platform hashtags shared by every category: the redundant tags a handbook-guided tagger must avoid.
BOILERPLATE: tuple[str, ...] = (
    "fyp",
    "viral",
    "ootd",
    "dailyshare",
    "follow4follow",
    "newpost",
    "trending",
    "likeforlike",
    "explorepage",
    "foryou",
    "photooftheday",
    "instagood",
)

TITLE_TEMPLATES: tuple[str, ...] = (
    "My new {item} {tp}",
    "Obsessed with this {item} {tp}",
    "Honest review: {item} {tp}",
    "Weekly haul — {item} {tp}",
    "Is this the best {item} {tp}?",
    "Finally! {item} {tp}",
    "Two weeks with my {item} {tp}",
    "Not gatekeeping this {item} {tp}",
    "Worth the hype? {item} {tp}",
    "A little {item} post {tp}",
    "{item} check {tp}",
)
TITLE_EMOJI: tuple[str, ...] = (" ✨", " 🔥", " 😍", " 💯", "!!", " 👀")

# {open} opener, {attrs} attribute sentences, {chat}/{chat2} distractors, {close} closer.
BODY_FRAMES: tuple[str, ...] = (
    "{open} {attrs} {chat} {close}",
    "{attrs} {chat}",
    "{open} {chat} {attrs} {close}",
    "Quick thoughts: {attrs} {close}",
    "{chat} {attrs}",
    "{open} {attrs}",
    "Long post, sorry! {open} {chat} {attrs} {chat2} {close}",
    "{attrs} {close}",
    "Details below. {attrs} {chat}",
    "{open} Here's the rundown. {attrs}",
    "{chat} {open} {attrs} {close}",
    "Okay, story time. {chat} {attrs} {chat2}",
    "{attrs} {chat} {chat2} {close}",
    "Saving this here for anyone curious. {attrs}",
    "{open} {attrs} Anyway. {chat} {close}",
    "Not an ad, just my opinion. {attrs} {close}",
    "{open}\n\n{attrs}\n\n{close}",
    "Update after a few weeks: {attrs} {chat}",
)

OPENERS: tuple[str, ...] = (
    "Finally got my hands on this {item}.",
    "Sharing my latest {item} with you all.",
    "So I've been testing this {item} for a while now.",
    "Been wanting to post about this {item} forever.",
    "Here's my honest take on this {item}.",
    "Can we talk about this {item} for a second?",
    "New {item} alert!",
    "A lot of you asked about this {item}.",
    "This {item} deserves its own post.",
)

CLOSERS: tuple[str, ...] = (
    "Would I recommend it? Yes.",
    "Let me know if you have questions!",
    "10/10, would do it again.",
    "Rating: 8/10.",
    "Drop your thoughts below.",
    "Not perfect, but I'm happy.",
    "Worth it in my opinion.",
    "Follow for more.",
    "Ask me anything in the comments.",
)

DISTRACTORS: tuple[str, ...] = (
    "The weather has been all over the place this week.",
    "Work has been crazy so this took forever to post.",
    "My cat tried to sit in every single photo.",
    "Still can't believe it's already the end of the month.",
    "I was late as usual.",
    "Shoutout to my friend who took these pictures.",
    "This is not sponsored, just sharing what I like.",
    "I almost forgot to post this.",
    "Mercury must be in retrograde or something.",
    "Trying to post more consistently this year.",
    "My feed has been a mess lately, sorry.",
    "Honestly I have no idea why I waited so long.",
    "The lighting in my place is terrible, bear with me.",
    "Tell me I'm not the only one who does this.",
    "I changed my mind about three times before posting.",
    "Weekend plans: absolutely nothing.",
    "Someone in the comments asked last time, so here it is.",
    "I still have a huge backlog of things to share.",
    "It took me way too long to edit this.",
    "Sorry for the blurry shots, my hands were shaking.",
    "My mom thinks I spend too much time online.",
    "Feeling grateful for this little community.",
    "Back to my to-do list after this.",
    "Not me writing this at 2am.",
)

# dimension -> title phrases, body sentences, caption phrases
DIMENSION_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "brand": {
        "title": ("by {v}", "from {v}", "({v})"),
        "body": (
            "This one is from {v}.",
            "Brand is {v}, in case anyone asks.",
            "{v} really did a good job with this {item}.",
            "I've always trusted {v} and this didn't change my mind.",
            "Made by {v}, which explains a lot.",
        ),
        "caption": ("with a visible {v} logo", "showing the {v} label", "with {v} branding on the side"),
    },
    "colour": {
        "title": ("in {v}", "— {v} edition"),
        "body": (
            "I went with the {v} version.",
            "The colour is {v} and it looks even better in person.",
            "Picked it in {v}, no regrets.",
            "That {v} shade is everything.",
            "Got it in {v} this time.",
        ),
        "caption": ("in {v}", "in a {v} colour", "with {v} tones throughout"),
    },
    "silhouette": {
        "title": ("{v} vibes", "the {v} silhouette"),
        "body": (
            "It's a {v} silhouette through and through.",
            "If you like the {v} shape, this is for you.",
            "Classic {v} profile.",
            "Definitely in the {v} family.",
        ),
        "caption": ("with a {v} silhouette", "showing a {v} shape from the side"),
    },
    "use_case": {
        "title": ("for {v}", "my {v} go-to"),
        "body": (
            "I mostly wear them for {v}.",
            "Perfect for {v}.",
            "Been using this {item} for {v} every week.",
            "Bought it with {v} in mind.",
        ),
        "caption": ("worn during {v}", "shot during {v}"),
    },
    "fit": {
        "title": ("sizing: {v}", "({v})"),
        "body": ("Sizing note: {v}.", "Heads up on fit: {v}.", "Fit-wise, {v}.", "Quick fit check: {v}."),
        "caption": ("with a fit note saying {v}", "with a size tag noting {v}"),
    },
    "price_tier": {
        "title": ("({v})", "— {v} pick"),
        "body": (
            "Price-wise it's {v}.",
            "Definitely a {v} purchase.",
            "Wallet check: {v}.",
            "I'd call it {v}.",
        ),
        "caption": ("with a price sticker that says {v}", "with a price tag reading {v}"),
    },
    "material": {
        "title": ("made of {v}", "{v} edition"),
        "body": (
            "It's made of {v}.",
            "The {v} feels amazing.",
            "Material is {v}, really nice quality.",
            "Love the {v} on this {item}.",
        ),
        "caption": ("with a close-up of the {v} texture", "made of {v}"),
    },
    "style": {
        "title": ("{v} vibes", "going {v}"),
        "body": (
            "Very {v} overall.",
            "I'm deep into my {v} era.",
            "The whole look is {v}.",
            "If {v} is your thing, you'll love this.",
        ),
        "caption": ("styled in a {v} way", "with a {v} aesthetic"),
    },
    "occasion": {
        "title": ("for {v}", "{v} ready"),
        "body": (
            "Wore this for {v}.",
            "My go-to for {v}.",
            "Planned this whole look around {v}.",
            "Works great for {v}.",
        ),
        "caption": ("taken at {v}", "dressed for {v}"),
    },
    "product_type": {
        "title": ("— my new {v}", "({v})"),
        "body": (
            "Quick context: it's a {v}.",
            "Been hunting for a good {v} for ages.",
            "This {v} earned its spot.",
            "The {v} itself is the star here.",
        ),
        "caption": (),
    },
    "skin_type": {
        "title": ("for {v}",),
        "body": (
            "I have {v}, so take this with that in mind.",
            "Works for my {v}.",
            "Great pick for {v}.",
            "If you have {v}, give it a try.",
        ),
        "caption": ("applied on {v}", "tested on {v}"),
    },
    "finish": {
        "title": ("{v} finish", "for that {v} look"),
        "body": (
            "The finish is {v}.",
            "Leaves a {v} look.",
            "Gives that {v} effect I wanted.",
            "Super {v} once on.",
        ),
        "caption": ("showing a {v} finish", "with a {v} look in the swatch"),
    },
    "scent": {
        "title": ("{v} scent",),
        "body": ("The scent is {v}.", "Smells {v}, very subtle.", "I love the {v} note.", "Scent-wise: {v}."),
        "caption": ("with a label that reads {v}", "next to a {v} sample"),
    },
    "feature": {
        "title": ("with {v}", "— {v}!"),
        "body": (
            "The {v} is the killer feature.",
            "Biggest upgrade for me: {v}.",
            "Really appreciate the {v}.",
            "The spec sheet says {v} and it delivers.",
        ),
        "caption": ("with a spec card listing {v}", "with box text highlighting {v}"),
    },
    "cuisine": {
        "title": ("{v} night", "{v} cravings"),
        "body": (
            "Craving {v} again.",
            "Best {v} I've had in a while.",
            "This is proper {v} cooking.",
            "We went full {v} tonight.",
        ),
        "caption": ("with {v} style plating", "as part of a {v} spread"),
    },
    "dish": {
        "title": ("({v})", "— {v}!!"),
        "body": (
            "The {v} was the highlight.",
            "Ordered the {v} and no regrets.",
            "Their {v} alone is worth the visit.",
            "Still thinking about that {v}.",
        ),
        "caption": (),
    },
    "flavour": {
        "title": ("so {v}", "({v})"),
        "body": (
            "Flavour-wise it's very {v}.",
            "Super {v}, exactly how I like it.",
            "That {v} taste though.",
            "If you like {v} flavours, go.",
        ),
        "caption": ("with a sauce that looks {v}", "looking visibly {v}"),
    },
    "diet": {
        "title": ("({v})", "{v} friendly"),
        "body": (
            "Everything here is {v}.",
            "Good news: it's {v}.",
            "Finally a {v} option that tastes great.",
            "Fully {v}, by the way.",
        ),
        "caption": ("with a menu sign marked {v}", "next to a {v} label on the menu"),
    },
    "venue": {
        "title": ("{v} find", "at a {v}"),
        "body": ("The place is a {v}.", "Found this at a {v}.", "Setting: {v}.", "Peak {v} energy."),
        "caption": ("in a {v} setting", "inside a {v}"),
    },
    "destination": {
        "title": ("in {v}", "{v} diaries"),
        "body": (
            "Just got back from {v}.",
            "{v} completely stole my heart.",
            "Spent the week in {v}.",
            "Next time in {v} I'm staying longer.",
        ),
        "caption": ("with a landmark of {v} in the background", "on a street in {v}"),
    },
    "trip_style": {
        "title": ("{v} edition", "my {v}"),
        "body": (
            "This was a {v}, first time for me.",
            "Planned it as a {v}.",
            "Tips for anyone doing a {v}:",
            "Nothing beats a {v}.",
        ),
        "caption": ("from a {v}", "capturing a typical {v} moment"),
    },
    "stay": {
        "title": ("staying at a {v}",),
        "body": (
            "We stayed at a {v}.",
            "The {v} was spotless.",
            "Booked a {v} and it was great.",
            "Home base: a {v}.",
        ),
        "caption": ("inside a {v}", "seen from the {v}"),
    },
    "season": {
        "title": ("during {v}", "{v} edition"),
        "body": (
            "Went during {v}.",
            "Timing was {v}.",
            "{v} is the best time, trust me.",
            "We planned it around {v}.",
        ),
        "caption": ("taken during {v}", "with {v} scenery"),
    },
    "activity": {
        "title": ("for {v}", "{v} day"),
        "body": (
            "Took it out for {v}.",
            "{v} is my weekend thing now.",
            "Tested it properly during {v}.",
            "Great companion for {v}.",
        ),
        "caption": ("used for {v}", "in action during {v}"),
    },
    "gear_type": {
        "title": ("({v})", "— new {v}"),
        "body": (
            "The {v} held up really well.",
            "Finally upgraded my {v}.",
            "This {v} is worth every gram.",
            "Packed the {v} and never looked back.",
        ),
        "caption": (),
    },
    "terrain": {
        "title": ("{v} test", "out in the {v}"),
        "body": (
            "Tested on {v} terrain.",
            "The {v} conditions were tough.",
            "Took it through {v}.",
            "Perfect for {v} routes.",
        ),
        "caption": ("with a {v} landscape in the background", "on {v} ground"),
    },
    "room": {
        "title": ("for the {v}", "{v} refresh"),
        "body": (
            "This is for the {v}.",
            "Our {v} finally feels finished.",
            "Gave the {v} a little upgrade.",
            "Styled it in the {v}.",
        ),
        "caption": ("placed in the {v}", "in a {v} corner"),
    },
}

# {noun}: the caption noun (or an item value), {a_noun} with its article; {phr}: attribute phrases; {scene}: the setting.
CAPTION_FRAMES: tuple[str, ...] = (
    "photo: {a_noun} {phr} {scene}",
    "image: close-up of the {noun}, {phr}",
    "pic: {noun} {scene}, {phr}",
    "{noun} {phr}, {scene}",
    "photo of {a_noun} {scene}; {phr}",
)


def generic_texts() -> list[str]:
    """Every fixed text a note may contain, with the ``{...}`` placeholders removed.

    Returns:
        Titles, frames, openers, closers, distractors and slot phrases; used to check that no
        surface form of a value appears in text that is not about that value.
    """
    texts: list[str] = [*TITLE_TEMPLATES, *BODY_FRAMES, *OPENERS, *CLOSERS, *DISTRACTORS, *CAPTION_FRAMES]
    for pools in DIMENSION_PHRASES.values():
        for pool in pools.values():
            texts.extend(pool)
    for key in (
        "{item}",
        "{tp}",
        "{open}",
        "{attrs}",
        "{chat2}",
        "{chat}",
        "{close}",
        "{v}",
        "{noun}",
        "{a_noun}",
    ):
        texts = [t.replace(key, " | ") for t in texts]
    return [t.replace("{phr}", " | ").replace("{scene}", " | ") for t in texts]
