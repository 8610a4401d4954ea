"""People in videos: every face linked across frames into one track per person, for `expclip predict --faces --track`
and the app's Live tab.

A small tracker in the manner of SORT / DeepSORT, on scipy's Hungarian assignment (`linear_sum_assignment`).
Maintained trackers do not fit: `trackers` (Apache-2.0) needs opencv-python, which clashes with our
opencv-python-headless; norfair pins numpy < 2; boxmot is AGPL. Each update, two rounds:

1. Tracks seen within `coast` seconds are matched to the frame's faces on box overlap with the box their motion
   predicts (constant velocity), the centres' distance, and appearance (the faces' CLIP image embeddings, which the
   model computes anyway). A pair must overlap or be near: a face never jumps across the frame.
2. Faces left over are matched to tracks lost for up to `memory` seconds (a person who left the frame, or was hidden,
   and came back) on appearance, with their size as a tie-breaker: the returning person gets their old number.

Whatever is still unmatched starts a new track; numbers are 1, 2, ... in order of first appearance.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from .faces import Box

NO_MATCH = 1e6  # the cost of a pair that fails its gate


@dataclass
class Track:
    """One person: where and when they were seen, and what they look like."""

    number: int
    times: list[float] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    detections: list[int] = field(default_factory=list)  # the caller's index of each matched face
    appearance: np.ndarray | None = None  # running mean of the faces' L2-normalised embeddings, L2-normalised
    velocity: tuple[float, float] = (0.0, 0.0)  # of the box centre, pixels per second

    @property
    def last_time(self) -> float:
        return self.times[-1]

    def predicted_box(self, time: float) -> Box:
        """The last box moved on at the track's velocity (constant-velocity motion model)."""
        box, dt = self.boxes[-1], time - self.last_time
        return Box(int(round(box.x + self.velocity[0] * dt)), int(round(box.y + self.velocity[1] * dt)), box.w, box.h)


def _centre(box: Box) -> np.ndarray:
    return np.array([box.x + box.w / 2, box.y + box.h / 2])


def _normalised(vector) -> np.ndarray | None:
    if vector is None:
        return None
    vector = np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else None


class FaceTracker:
    """Feed it each sampled frame's faces in time order; it says which track each face belongs to.

        tracker = FaceTracker(memory=5.0)
        numbers = tracker.update(time, boxes, embeddings)  # one track number per box

    - `memory`: seconds a lost track waits for its person to come back (`--track-memory`).
    - `coast`: seconds a track keeps being matched by its predicted motion before only appearance can bring it back.
    - `min_iou`: the least overlap between a face and a track's predicted box in round 1, unless the centres are
      within `max_centre_distance` box sizes.
    - `appearance_weight`: how much the cosine distance of the embeddings adds to round 1's cost.
    - `min_similarity`: round 2 takes a lost track only for a face whose embedding has at least this cosine similarity
      with the track's appearance (without embeddings, only faces of a similar size near where it was lost).
    """

    def __init__(self, memory: float = 5.0, coast: float = 1.0, min_iou: float = 0.1,
                 max_centre_distance: float = 0.75, appearance_weight: float = 0.5, min_similarity: float = 0.8,
                 appearance_momentum: float = 0.8):
        if memory < 0:
            raise ValueError(f"track memory must be at least 0 seconds, got {memory}")
        self.memory, self.coast, self.min_iou = memory, min(coast, memory), min_iou
        self.max_centre_distance, self.appearance_weight = max_centre_distance, appearance_weight
        self.min_similarity, self.appearance_momentum = min_similarity, appearance_momentum
        self.tracks: list[Track] = []
        self._detections = 0

    # ----- costs ----------------------------------------------------------------------------------------------------

    def _motion_cost(self, track: Track, box: Box, time: float) -> float:
        predicted = track.predicted_box(time)
        overlap = predicted.iou(box)
        distance = np.linalg.norm(_centre(predicted) - _centre(box)) / max(predicted.w, predicted.h, box.w, box.h)
        if overlap < self.min_iou and distance > self.max_centre_distance:
            return NO_MATCH
        return (1.0 - overlap) + distance

    @staticmethod
    def _similarity(track: Track, embedding) -> float | None:
        if track.appearance is None or embedding is None:
            return None
        return float(track.appearance @ embedding)

    @staticmethod
    def _size_change(track: Track, box: Box) -> float:
        last = track.boxes[-1]
        return abs(np.log((box.w * box.h) / max(1, last.w * last.h)))

    def _assign(self, costs: np.ndarray) -> list[tuple[int, int]]:
        if costs.size == 0:
            return []
        rows, columns = linear_sum_assignment(costs)
        return [(r, c) for r, c in zip(rows, columns) if costs[r, c] < NO_MATCH]

    # ----- one frame ------------------------------------------------------------------------------------------------

    def update(self, time: float, boxes: list[Box], embeddings=None) -> list[int]:
        """The faces of one frame at `time` seconds (times must not go back) -> the track number of each face.
        `embeddings`: one vector per face (any length, normalised here), or None to track on boxes alone."""
        embeddings = [None] * len(boxes) if embeddings is None else [_normalised(e) for e in embeddings]
        live = [t for t in self.tracks if time - t.last_time <= self.memory]
        recent = [t for t in live if time - t.last_time <= self.coast]
        numbers: list[int | None] = [None] * len(boxes)

        # Round 1: recent tracks, on predicted box overlap, centre distance and appearance.
        costs = np.full((len(recent), len(boxes)), NO_MATCH)
        for r, track in enumerate(recent):
            for c, box in enumerate(boxes):
                cost = self._motion_cost(track, box, time)
                similarity = self._similarity(track, embeddings[c])
                if cost < NO_MATCH and similarity is not None:
                    cost += self.appearance_weight * (1.0 - similarity)
                costs[r, c] = cost
        matched_tracks = set()
        for r, c in self._assign(costs):
            numbers[c] = recent[r].number
            matched_tracks.add(recent[r].number)

        # Round 2: faces left over against tracks lost for up to `memory` seconds, on appearance (size breaks ties).
        lost = [t for t in live if t.number not in matched_tracks]
        left = [c for c in range(len(boxes)) if numbers[c] is None]
        costs = np.full((len(lost), len(left)), NO_MATCH)
        for r, track in enumerate(lost):
            for j, c in enumerate(left):
                size_change = self._size_change(track, boxes[c])
                if size_change > np.log(4.0):  # a face four times larger or smaller is someone else
                    continue
                similarity = self._similarity(track, embeddings[c])
                if similarity is None:  # no appearance to go on: only a face of similar size near where it was lost
                    motion = self._motion_cost(track, boxes[c], track.last_time)
                    costs[r, j] = motion + size_change if motion < NO_MATCH else NO_MATCH
                elif similarity >= self.min_similarity:
                    costs[r, j] = (1.0 - similarity) + 0.1 * size_change
        for r, j in self._assign(costs):
            numbers[left[j]] = lost[r].number

        # Whatever is left is a new person.
        for c in range(len(boxes)):
            if numbers[c] is None:
                self.tracks.append(Track(len(self.tracks) + 1))
                numbers[c] = self.tracks[-1].number
        for c, number in enumerate(numbers):
            self._observe(self.tracks[number - 1], time, boxes[c], embeddings[c])
        return numbers

    def _observe(self, track: Track, time: float, box: Box, embedding) -> None:
        if track.boxes and time > track.last_time:
            step = (_centre(box) - _centre(track.boxes[-1])) / (time - track.last_time)
            if time - track.last_time > self.coast:  # back after a long absence: its old motion says nothing
                track.velocity = (0.0, 0.0)
            else:  # smoothed, so one jittery box does not throw the prediction off
                track.velocity = tuple(0.5 * np.asarray(track.velocity) + 0.5 * step) if len(track.boxes) > 1 \
                    else tuple(step)
        track.times.append(float(time))
        track.boxes.append(box)
        track.detections.append(self._detections)
        self._detections += 1
        if embedding is not None:
            mixed = embedding if track.appearance is None else (
                self.appearance_momentum * track.appearance + (1 - self.appearance_momentum) * embedding)
            track.appearance = _normalised(mixed)

    def current(self, time: float) -> list[Track]:
        """The tracks seen at `time` (the last update), in number order."""
        return [t for t in self.tracks if t.last_time == time]
