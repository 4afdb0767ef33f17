"""The label set: the 18 DCASE 2025 Task 4 target classes, in the order every bundle uses."""

CLASSES: tuple[str, ...] = (
    "AlarmClock",
    "BicycleBell",
    "Blender",
    "Buzzer",
    "Clapping",
    "Cough",
    "CupboardOpenClose",
    "Dishes",
    "Doorbell",
    "FootSteps",
    "HairDryer",
    "MechanicalFans",
    "MusicalKeyboard",
    "Percussion",
    "Pour",
    "Speech",
    "Typing",
    "VacuumCleaner",
)

CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}


def parse_class_list(text: str, known: tuple[str, ...] = CLASSES) -> list[str]:
    """Parse 'Speech,Doorbell' (case-insensitive) into canonical names; unknown names are an error."""
    lookup = {name.lower(): name for name in known}
    names: list[str] = []
    for raw in text.split(","):
        key = raw.strip().lower()
        if not key:
            continue
        if key not in lookup:
            raise ValueError(f"unknown class {raw.strip()!r}; known classes: {', '.join(known)}")
        if lookup[key] not in names:
            names.append(lookup[key])
    if not names:
        raise ValueError("empty class list")
    return names
