"""The spoken-instruction test set: natural phrasing, teleop commands, stop words and near misses.

Written for the voice benchmark (`python -m nvila_nav.voice.bench`), not generated from the
simulator's sentence templates: what people say to a robot in a home ("Exit the bedroom and turn
left..."), short teleop commands ("back up a little"), the stop words, and phrases that contain
"stop" or sound like it but must not stop the robot.

Each instruction names its goal (the words that must survive for the robot to get there; empty
for teleop commands) and is scored on its key words (content words: `key_words`).
"""

from __future__ import annotations

from dataclasses import dataclass

from nvila_nav.voice.text import normalize


@dataclass(frozen=True)
class Item:
    text: str
    goal: str = ""
    """Words naming where the robot should end up ("bathroom door"); empty: a teleop command."""


INSTRUCTIONS: tuple[Item, ...] = (
    Item(
        "Exit the bedroom and turn left. Walk down the hallway past the stairs and stop in front "
        "of the bathroom door.",
        "bathroom door",
    ),
    Item("Go to the kitchen and wait next to the fridge.", "fridge"),
    Item("Walk into the living room and stop by the sofa.", "sofa"),
    Item("Head out of the office and go to the front door.", "front door"),
    Item("Go down the hallway and enter the second room on the right.", "second room"),
    Item("Turn right and walk to the window.", "window"),
    Item("Go through the door on your left and stop at the table.", "table"),
    Item("Walk past the couch and wait by the plant.", "plant"),
    Item("Leave the kitchen, turn right and go to the bedroom.", "bedroom"),
    Item("Please go to the bathroom.", "bathroom"),
    Item("Take me to the dining table.", "dining table"),
    Item("Go to the red chair in the corner.", "red chair"),
    Item("Walk straight ahead until you reach the bookshelf.", "bookshelf"),
    Item("Turn around and go back to the kitchen.", "kitchen"),
    Item("Go into the office and stop next to the desk.", "desk"),
    Item("Follow the hallway to the end and turn left into the bedroom.", "bedroom"),
    Item("Walk towards the blue door and stop before it.", "blue door"),
    Item("Move to the middle of the living room.", "living room"),
    Item("Go past the stairs and wait at the front door.", "front door"),
    Item("Cross the room and stop near the television.", "television"),
    Item("Find the green plant and stop beside it.", "green plant"),
    Item("Go out the door, turn right, and stop at the end of the hallway.", "hallway"),
    Item("Walk through the kitchen into the dining room.", "dining room"),
    Item("Go to the laundry room.", "laundry room"),
    Item("Drive over to the yellow box next to the shelf.", "yellow box"),
    Item("Bring yourself to the bed and stop there.", "bed"),
    Item("Turn left at the end of the hall and go to the bathroom.", "bathroom"),
    Item("Go to the garage door.", "garage door"),
    Item("Walk along the wall until you reach the window.", "window"),
    Item("Enter the first door on the left and stop inside.", "first door"),
    Item("Leave this room and find the kitchen.", "kitchen"),
    Item("Go up to the white cabinet.", "white cabinet"),
    Item("Move over to the armchair by the window.", "armchair"),
    Item("Head to the stairs and wait at the bottom.", "stairs"),
    Item("Go back to where you started.", "started"),
    Item("Walk past the table and stop at the second chair.", "second chair"),
    Item("Go to the office at the end of the corridor.", "office"),
    Item("Turn right after the sofa and go into the kitchen.", "kitchen"),
    Item("Stop at the red chair.", "red chair"),
    Item("Stop next to the blue sofa.", "blue sofa"),
    Item("Wait by the sink in the kitchen.", "sink"),
    Item("Go to the lamp next to the bed.", "lamp"),
    Item("Walk to the coffee table in the living room.", "coffee table"),
    Item("Go around the table and stop at the door.", "door"),
    Item("Find the trash can and stop in front of it.", "trash can"),
    Item("Go to the hallway and wait there.", "hallway"),
    Item("Follow the corridor and stop at the last door.", "last door"),
    Item("Exit the bathroom and go to the living room.", "living room"),
    Item("Walk to the closet in the bedroom.", "closet"),
    Item("Go to the balcony door.", "balcony door"),
)

TELEOP: tuple[Item, ...] = (
    Item("Go forward two meters."),
    Item("Turn left ninety degrees."),
    Item("Back up a little."),
    Item("Turn around."),
    Item("Turn right forty five degrees."),
    Item("Move forward one meter."),
    Item("Go forward fifty centimeters."),
    Item("Turn right."),
    Item("Turn left a bit."),
    Item("Move ahead three meters."),
    Item("Rotate to the right thirty degrees."),
    Item("Go straight."),
    Item("Come here."),
    Item("Follow me."),
)

STOPS: tuple[str, ...] = ("Stop.", "Halt.", "Freeze.", "Emergency stop.", "Stop!", "Stop, stop.")
"""What must stop the robot at once."""

NEAR_MISSES: tuple[str, ...] = (
    "Follow me.",
    "Stop at the red chair.",
    "Don't stop.",
    "Start.",
    "Go on.",
    "Hold on a second.",
    "Top.",
    "Shop.",
)
"""Short utterances that must not fire the stop detector."""

_FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "then",
        "to",
        "of",
        "in",
        "on",
        "at",
        "by",
        "into",
        "out",
        "up",
        "down",
        "over",
        "past",
        "through",
        "until",
        "you",
        "your",
        "it",
        "there",
        "this",
        "that",
        "me",
        "please",
        "yourself",
        "after",
        "before",
        "beside",
        "next",
        "front",
        "end",
        "where",
        "is",
        "are",
    ]
)
DIRECTION_WORDS = frozenset(
    ["left", "right", "forward", "back", "around", "ahead", "straight", "backward"]
)


def key_words(text: str) -> list[str]:
    """Content words of an utterance (normalised): everything but function words."""
    return [w for w in normalize(text).split() if w not in _FUNCTION_WORDS]


def directions(text: str) -> list[str]:
    return [w for w in normalize(text).split() if w in DIRECTION_WORDS]


def goal_kept(goal: str, hypothesis: str) -> bool:
    """Every word of the goal appears in the hypothesis, in order."""
    words = normalize(hypothesis).split()
    position = 0
    for word in normalize(goal).split():
        try:
            position = words.index(word, position) + 1
        except ValueError:
            return False
    return True
