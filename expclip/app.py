"""`expclip app`: a web page for Exp-CLIP (Gradio), and the Hugging Face Space behind `app.py`.

    expclip app [--model M] [--host 127.0.0.1] [--port 7860]      # or, in a Space: python app.py

An image tab (drop a photo or use the webcam: each face boxed with its label, the largest face's probabilities as a
bar chart), a video tab (the clip's label and the per-second timeline plot; with "track every person", a timeline
per person and the annotated video) and a live tab (the browser's webcam streamed to the app with Gradio's native
streaming: every face boxed, numbered and labelled, tracks and a short smoothing kept per visitor in `gr.State`);
labels and prompts are editable. The first two tabs' functions are named API endpoints for `gradio_client`:
`/predict_image` (an image -> the records `ExpCLIPPredictor` returns with `faces=True`) and `/predict_video` (a video
-> its clip record; with `track`, the list of the clip record and one "track" record per person). Every bad input is
the predictor's one-line message in the page; the app keeps serving. Gradio is an optional extra
(`pip install -e ".[app]"`); it is told to stay offline (no analytics, version check, share link or web fonts).
"""

import argparse
import errno
import functools
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from .inputs import load_image, one_line
from .predictor import ExpCLIPPredictor, annotate, check_label_set, parse_labels, parse_prompts
from .tracking import FaceTracker
from .video import draw_tracks

INSTALL_HINT = 'pip install "gradio>=6,<7" (or the app extra: pip install -e ".[app]")'
# Gradio must not reach the network: a Space, a laptop offline and CI all serve the page from this machine alone.
OFFLINE_GRADIO = {"GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SHARE": "False", "GRADIO_SSR_MODE": "False"}
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # Gradio's default theme would fetch Google Fonts
SYSTEM_MONO_FONTS = ["ui-monospace", "Consolas", "monospace"]


class UserError(Exception):
    """A bad input or setting in the page: its message is one line, shown in the page."""


class ExpCLIPApp:
    """What the page and the API do, without Gradio: one model loaded once, a predictor per label and prompt set
    (the label prompts are encoded once per set and cached by the model)."""

    def __init__(self, model: str | None = None, device: str = "auto", detector: str | None = "yunet",
                 detector_model: str | None = None, outputs: Path | None = None, smooth: float = 1.0,
                 track_memory: float = 5.0, refresh: float = 0.2):
        # the Live tab's label smoothing, track memory and time between two scorings of the faces, in seconds
        self.smooth, self.track_memory, self.refresh = smooth, track_memory, refresh
        self.base = ExpCLIPPredictor.from_pretrained(model, device=device, detector=detector,
                                                     detector_model=detector_model, workers=1)
        self.base.detector  # the page looks for faces: resolve and load the detector before serving anyone
        config = self.base.model.config
        self.default_labels = ", ".join(self.base.class_names)
        templates = config.prompt_templates
        self.default_prompts = templates if isinstance(templates, str) else " | ".join(templates)
        # people's photos and their timelines: one folder per request inside, all of it removed by `close`
        self.outputs = Path(outputs) if outputs is not None else Path(tempfile.mkdtemp(prefix="expclip-app-"))
        self.outputs.mkdir(parents=True, exist_ok=True)
        self._predictors = {}

    def close(self) -> None:
        """Remove every file the app wrote (annotated photos, timelines, Gradio's copies of uploads)."""
        shutil.rmtree(self.outputs, ignore_errors=True)

    def predictor(self, labels: str | None, prompts: str | None) -> ExpCLIPPredictor:
        """The predictor for the page's label list and prompt set (None or the model's own: the loaded one)."""
        label_list = parse_labels(labels)  # an empty field gives [""], refused below as an empty label list
        prompt_set = None if prompts is None else parse_prompts(prompts.strip())
        try:
            check_label_set(label_list, prompt_set)
        except ValueError as error:
            raise UserError(str(error))
        if label_list == self.base.class_names:
            label_list = None
        if prompt_set == self.default_prompts:
            prompt_set = None
        key = (label_list and tuple(label_list), prompt_set if not isinstance(prompt_set, list) else tuple(prompt_set))
        if key == (None, None):
            return self.base
        if key not in self._predictors:
            self._predictors[key] = ExpCLIPPredictor(self.base.model, self.base.processor, label_list, prompt_set,
                                                     detector=self.base.detector, workers=1)
        return self._predictors[key]

    @staticmethod
    def _named(records: list[dict], path: str) -> list[dict]:
        """Records name the uploaded file by its own name, not Gradio's temporary path."""
        name = Path(path).name
        for record in records:
            record["source"] = name
            if record.get("error"):
                record["error"] = record["error"].replace(str(path), name)
        return records

    def predict_image(self, image: str | None, labels: str | None = None, prompts: str | None = None) -> list[dict]:
        """An image file -> one record per face (`ExpCLIPPredictor(..., faces=True)`), or its one "error" record."""
        if not image:
            raise UserError("no image: drop a photo, choose a file or take one with the webcam")
        return self._named(self.predictor(labels, prompts)([str(image)], faces=True), str(image))

    def predict_video(self, video: str | None, labels: str | None = None, prompts: str | None = None,
                      faces: bool = False, track: bool = False) -> dict | list[dict]:
        """A video file -> its clip record (label, scores, sampled frames) with the per-second timeline files; with
        `track`, [the clip record, one "track" record per person], with per-person timelines and the annotated
        video."""
        if not video:
            raise UserError("no video: drop a video file or choose one")
        timeline_dir = Path(tempfile.mkdtemp(dir=self.outputs, prefix="timeline-"))
        if not track:
            [record] = self.predictor(labels, prompts)([str(video)], faces=faces, timeline_dir=timeline_dir)
            return self._named([record], str(video))[0]
        annotate_dir = Path(tempfile.mkdtemp(dir=self.outputs, prefix="annotated-"))
        predictor = self.predictor(labels, prompts)
        predictor.annotated_video_suffix = ".webm"  # VP8, which the browser plays (pip's OpenCV has no H.264)
        records = predictor([str(video)], faces=True, timeline_dir=timeline_dir,
                                                  annotate_dir=annotate_dir, track=True,
                                                  track_memory=self.track_memory)
        return self._named(records, str(video))

    def live_frame(self, frame, state: dict | None, labels: str | None = None, prompts: str | None = None):
        """One webcam frame (H, W, 3 RGB) -> (the frame with every face boxed, numbered and labelled, the new state,
        one line of text). `state` (per visitor, `gr.State`) keeps the tracker and each track's smoothed
        probabilities: an exponential average over `smooth` seconds, so labels do not flicker. The model scores the
        faces `refresh` seconds after it last did (0: every frame) and when the number of faces changes."""
        import time

        import numpy as np

        if frame is None:
            raise UserError("no webcam frame: allow the camera in the browser, or check that one is connected")
        rgb = np.asarray(load_image(frame))
        predictor = self.predictor(labels, prompts)
        now = time.monotonic()
        key = tuple(predictor.class_names)
        if not state or state.get("labels") != key:  # a new visitor, or a new label set: start afresh
            state = {"labels": key, "tracker": FaceTracker(memory=self.track_memory), "smoothed": {}}
        boxes = self.base.detector.detect(rgb) if self.base.detector is not None else []
        # The model scores the faces once `refresh` seconds have passed since it last did, and whenever the number of
        # faces changes (someone came or went: the tracker then has their appearance); in between, faces are tracked
        # on their boxes and keep their smoothed labels, so boxes follow every frame at the detector's speed.
        score_all = (now - state.get("scored", -np.inf) >= self.refresh or len(boxes) != state.get("faces"))
        state["faces"] = len(boxes)
        numbers, shown, rows = [], [], {}
        if boxes:
            if score_all:
                appearance, probs = self._score_faces(predictor, rgb, boxes)
                numbers = state["tracker"].update(now, boxes, appearance)
                # counted from when scoring ended: a slow model still leaves `refresh` seconds of tracked frames
                rows, state["scored"] = dict(enumerate(probs)), time.monotonic()
            else:
                numbers = state["tracker"].update(now, boxes)
                unseen = [i for i, number in enumerate(numbers) if number not in state["smoothed"]]
                if unseen:  # a new person between two scored frames: scored now
                    rows = dict(zip(unseen, self._score_faces(predictor, rgb, [boxes[i] for i in unseen])[1]))
            for index, (number, box) in enumerate(zip(numbers, boxes)):
                last, row = state["smoothed"].get(number), rows.get(index)
                if row is None:  # not scored this frame: its smoothed probabilities stand
                    row = last[1]
                else:
                    if last is not None and self.smooth > 0:
                        weight = 1.0 - np.exp(-(now - last[0]) / self.smooth)
                        row = (1 - weight) * last[1] + weight * row
                    state["smoothed"][number] = (now, row)
                label = predictor.class_names[int(np.argmax(row))]
                shown.append((number, box.as_list(), label))
        faces = ", ".join(f"person {n}: **{label}**" for n, _, label in sorted(shown))
        line = f"{len(shown)} face{'s' * (len(shown) != 1)}" + (f" — {faces}" if faces else "")
        return draw_tracks(rgb, shown), state, line

    @staticmethod
    def _score_faces(predictor: ExpCLIPPredictor, rgb, boxes):
        """The faces at `boxes` in one batch -> (their CLIP image embeddings: the tracker's appearance, their
        probabilities)."""
        from PIL import Image

        from .faces import crop_face

        image = Image.fromarray(rgb)
        pixel_values = predictor.pixel_values([crop_face(image, box, predictor.face_margin) for box in boxes])
        appearance, _, probs = predictor._face_features(pixel_values)
        return appearance, probs

    def show_image(self, image: str | None, records: list[dict] | None):
        """(annotated image path, the largest face's probabilities, one line of text) for the page."""
        if not records:
            return None, None, ""
        if records[0].get("error"):
            return None, None, f"**Error:** {records[0]['error']}"
        request = Path(tempfile.mkdtemp(dir=self.outputs))
        try:  # the page gets the pixels; the photo's annotated copy is not kept once it has been read back
            path = annotate(load_image(str(image)), records, request, records[0]["source"], set())
            with Image.open(path) as written:
                annotated = written.copy()
        finally:
            shutil.rmtree(request, ignore_errors=True)
        if records[0].get("label") is None:
            return annotated, None, records[0].get("note", "No face found in this image.")
        faces = ", ".join(f"face {r['face']}: **{r['label']}** ({r['scores'][r['label']]:.2f})" for r in records)
        return annotated, records[0]["scores"], f"{len(records)} face{'s' * (len(records) > 1)} — {faces}"

    def show_video(self, record: dict | None):
        """(the clip's probabilities, the timeline plot, one line of text) for the page; the request's timeline
        files are removed once read."""
        if not record:
            return None, None, ""
        if record.get("error"):
            return None, None, f"**Error:** {record['error']}"
        timeline = None
        png = (record.get("timeline") or {}).get("png")
        if png and Path(png).is_file() and self.outputs in Path(png).resolve().parents:
            with Image.open(png) as plot:
                timeline = plot.copy()
            shutil.rmtree(Path(png).resolve().parent, ignore_errors=True)
        if record.get("label") is None:
            return record.get("scores") or None, timeline, record.get("note", "")
        line = f"**{record['label']}** ({record['scores'][record['label']]:.2f}), {record['frames']} frames"
        return record["scores"], timeline, line

    @staticmethod
    def show_tracks(records: dict | list | None):
        """(the clip's probabilities, the clip's timeline, one line of text, the per-person timelines, the
        annotated video) for the page: the clip record alone, or the clip and track records of `track`."""
        records = records if isinstance(records, list) else [records] if records else []
        problems = [r["error"] for r in records if r.get("error")]
        clip = next((r for r in records if r.get("kind") == "video" and not r.get("error")), None)
        if clip is None:
            return None, None, f"**Error:** {problems[0]}" if problems else "", None, None
        scores, timeline, line = ExpCLIPApp.show_video(clip)
        people = [r for r in records if r.get("kind") == "track"]
        if people:
            line += "; " + ", ".join(f"person {r['track']}: **{r['label']}**" for r in people)
        elif "tracks" in clip:
            line += "; " + clip.get("note", "no person tracked")
        if problems:
            line += f" (**Error:** {problems[0]})"
        return scores, timeline, line, (clip.get("track_timeline") or {}).get("png"), clip.get("annotated")


def build_demo(app: ExpCLIPApp):
    """The Gradio page around `app`: an image tab and a video tab, each a named API endpoint."""
    import gradio as gr

    def keep_file_as_uploaded(preprocess):
        """gr.Image's preprocessing opens the upload with PIL and fails on a corrupt file with a bare "Error"; the
        photo goes to the predictor as it is instead, which names what is wrong in one line. (Set on the instance: a
        gr.Image subclass would make Gradio write a .pyi stub beside this file.)"""

        def call(payload):
            if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
                return str(payload.path)
            return preprocess(payload)

        return call

    def guarded(work):
        @functools.wraps(work)  # the API shows the function's own parameter names
        def call(*args):
            try:
                return work(*args)
            except UserError as error:
                raise gr.Error(str(error), print_exception=False)
            except Exception as error:  # noqa: BLE001 -- one line in the page, never a stack trace
                raise gr.Error(one_line(error), print_exception=False)

        return call

    with gr.Blocks(title="Exp-CLIP: zero-shot facial expressions", analytics_enabled=False) as demo:
        gr.Markdown("# Exp-CLIP\nZero-shot facial expression recognition: CLIP plus one projection learned from an "
                    "LLM's descriptions of facial actions (WACV 2025). Any label set works.")
        with gr.Row():
            labels = gr.Textbox(app.default_labels, label="Labels (comma-separated)", elem_id="labels")
            prompts = gr.Textbox(app.default_prompts, label="Prompts (type1 ... type5, or templates with {}, "
                                                            "|-separated)", elem_id="prompts")
        with gr.Tab("Image"):
            with gr.Row():
                photo = gr.Image(type="filepath", sources=["upload", "webcam"], label="Photo", elem_id="photo")
                photo.preprocess = keep_file_as_uploaded(photo.preprocess)
                annotated = gr.Image(label="Faces found", interactive=False, elem_id="annotated", format="jpeg")
            run_image = gr.Button("Classify faces", variant="primary", elem_id="run-image")
            image_message = gr.Markdown(elem_id="image-message")
            image_chart = gr.Label(label="Largest face", num_top_classes=11, elem_id="image-chart")
            image_records = gr.JSON(label="Records (the /predict_image API result)", elem_id="image-records")
        with gr.Tab("Video"):
            with gr.Row():
                video = gr.Video(sources=["upload"], label="Video", elem_id="video", format=None)
                timeline = gr.Image(label="Timeline (per second)", interactive=False, elem_id="timeline")
            video_faces = gr.Checkbox(False, label="Classify the largest face of each frame")
            video_track = gr.Checkbox(False, label="Track every person (a timeline per person and the annotated "
                                                   "video)", elem_id="video-track")
            run_video = gr.Button("Classify clip", variant="primary", elem_id="run-video")
            video_message = gr.Markdown(elem_id="video-message")
            video_chart = gr.Label(label="Clip", num_top_classes=11, elem_id="video-chart")
            with gr.Row():
                people_timeline = gr.Image(label="Timeline per person", interactive=False, elem_id="people-timeline")
                annotated_video = gr.Video(label="Annotated video", interactive=False, elem_id="annotated-video")
            video_record = gr.JSON(label="Record (the /predict_video API result)", elem_id="video-record")
        with gr.Tab("Live"):
            with gr.Row():
                webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam", elem_id="webcam")
                live = gr.Image(label="Faces, tracked", interactive=False, format="jpeg", elem_id="live")
            live_message = gr.Markdown(elem_id="live-message")
            live_state = gr.State(None)  # per visitor: the tracker and each person's smoothed probabilities

        gr.on([run_image.click, photo.upload], guarded(app.predict_image), [photo, labels, prompts], image_records,
              api_name="predict_image").success(
            guarded(app.show_image), [photo, image_records], [annotated, image_chart, image_message],
            api_visibility="private")
        run_video.click(guarded(app.predict_video), [video, labels, prompts, video_faces, video_track], video_record,
                        api_name="predict_video").success(
            guarded(app.show_tracks), video_record,
            [video_chart, timeline, video_message, people_timeline, annotated_video], api_visibility="private")

        def live_frame(frame, state, labels_text, prompts_text):
            """A failing frame is one line under the stream, which goes on: an exception would end it."""
            try:
                return app.live_frame(frame, state, labels_text, prompts_text)
            except Exception as error:  # noqa: BLE001 -- one line in the page, never a stack trace
                return None, state, f"**Error:** {error if isinstance(error, UserError) else one_line(error)}"

        webcam.stream(live_frame, [webcam, live_state, labels, prompts], [live, live_state, live_message],
                      stream_every=0.1, concurrency_limit=1, api_visibility="private")
    return demo


# The Live tab, when the browser gives no camera (permission denied, none connected): Gradio's webcam stays on "Click
# to Access Webcam" and the app never hears of it, so the page says why in one line under the stream.
CAMERA_ERROR_SCRIPT = """<script>
(() => {
  const devices = navigator.mediaDevices;
  if (!devices || !devices.getUserMedia) return;
  const getUserMedia = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    try {
      return await getUserMedia(constraints);
    } catch (error) {
      const message = document.querySelector("#live-message");
      if (message) {
        let line = document.querySelector("#camera-error");
        if (!line) {
          line = document.createElement("p");
          line.id = "camera-error";
          message.before(line);
        }
        line.textContent = error.name === "NotAllowedError"
          ? "Camera: permission denied. Allow the camera for this page, then click the webcam again."
          : `Camera: ${error.name === "NotFoundError" ? "none found" : error.message}.`;
      }
      throw error;
    }
  };
})();
</script>"""


def launch(app: ExpCLIPApp, host: str = "127.0.0.1", port: int = 7860, quiet: bool = False):
    """Serve until Ctrl-C (KeyboardInterrupt) or SIGTERM (SystemExit), then stop the server; the caller removes the
    app's files."""
    import gradio as gr

    demo = build_demo(app)
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS)
    demo.queue().launch(server_name=host, server_port=port, share=False, quiet=quiet, theme=theme,
                        allowed_paths=[str(app.outputs)], footer_links=["api"], prevent_thread_lock=True,
                        head=CAMERA_ERROR_SCRIPT)
    try:  # Gradio's own blocking loop swallows Ctrl-C and returns: the command would exit 0, not 130
        while True:
            time.sleep(0.5)
    finally:
        demo.close()


def check_address(host: str, port: int) -> str | None:
    """Why the app cannot serve on host:port (one line), or None: checked before anything is loaded."""
    if not 1 <= port <= 65535:
        return f"--port {port}: not a port number (1 to 65535)"
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError, ValueError) as error:
        return f"--host {host}: not an address of this machine ({getattr(error, 'strerror', None) or error})"
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"--port {port}: already in use on {host}; choose another port"
            return f"--host {host} --port {port}: cannot serve there ({error.strerror or error})"
    return None


# ----- command line ----------------------------------------------------------------------------------------------------


def seconds(text: str) -> float:
    """An option's number of seconds, at least 0 (argparse prints the message on one line and exits with 2)."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0 seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=os.environ.get("EXPCLIP_APP_MODEL"),
                        help="local Exp-CLIP folder or Hub id (default: EXPCLIP_APP_MODEL, else the authors' L/14 "
                             "head, fetched once and cached)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
                        help="address to serve on (default 127.0.0.1, or GRADIO_SERVER_NAME as a Space sets it)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or 7860),
                        help="port (default 7860)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--detector", choices=("yunet", "haar"), default="yunet",
                        help="face detector (default yunet; see expclip predict --help)")
    parser.add_argument("--detector-model", default=None, metavar="FILE", help="YuNet ONNX file or Haar cascade")
    parser.add_argument("--smooth", type=seconds, default=1.0, metavar="SECONDS",
                        help="Live tab: each person's probabilities are averaged over about this many seconds, so "
                             "labels do not flicker (default 1; 0: none)")
    parser.add_argument("--track-memory", type=seconds, default=5.0, metavar="SECONDS",
                        help="how long a person may leave the picture and keep their number (default 5)")
    parser.add_argument("--refresh", type=seconds, default=0.2, metavar="SECONDS",
                        help="Live tab: the model scores the faces again once this many seconds have passed since "
                             "it last did, and when someone comes or goes; in between, boxes follow every frame and "
                             "keep their labels (default 0.2; 0: every frame)")


def _stop_on_sigterm(signum, frame):  # a stopped Space or `kill`: the same clean exit as Ctrl-C
    raise SystemExit(128 + signum)


def _gradio_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("gradio") is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def run(args: argparse.Namespace) -> int:
    if not _gradio_installed():  # what is missing, before anything is loaded
        print(f"expclip app: the app needs Gradio, which is not installed: {INSTALL_HINT}", file=sys.stderr)
        return 1
    problem = check_address(args.host, args.port)  # before Gradio or the model load: a bad port is one line
    if problem:
        print(f"expclip app: error: {problem}", file=sys.stderr)
        return 2
    for name, value in OFFLINE_GRADIO.items():
        os.environ.setdefault(name, value)
    outputs = Path(tempfile.mkdtemp(prefix="expclip-app-"))
    # Gradio's copies of uploads and results go there too (unless the user chose a place), removed with it; Gradio
    # reads the variable when imported
    own_gradio_dir = "GRADIO_TEMP_DIR" not in os.environ
    os.environ.setdefault("GRADIO_TEMP_DIR", str(outputs / "gradio"))
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        try:
            import gradio  # noqa: F401 -- imported here, after GRADIO_TEMP_DIR is set
        except ImportError:
            print(f"expclip app: the app needs Gradio, which is not installed: {INSTALL_HINT}", file=sys.stderr)
            return 1
        from transformers.utils import logging as hf_logging

        from .faces import DetectorError
        from .models import ModelFetchError

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            app = ExpCLIPApp(args.model, args.device, args.detector, args.detector_model, outputs=outputs,
                             smooth=args.smooth, track_memory=args.track_memory, refresh=args.refresh)
        except (ModelFetchError, DetectorError, ValueError, OSError) as error:  # their messages are one line
            print(f"expclip app: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
            return 1
        except Exception as error:  # noqa: BLE001 -- a model or detector that cannot be loaded: one line
            print(f"expclip app: error: {one_line(error)}", file=sys.stderr)
            return 1
        launch(app, args.host, args.port)
        return 0
    except KeyboardInterrupt:  # Ctrl-C: the status every command gives (README)
        print("\nexpclip app: interrupted", file=sys.stderr)
        return 130
    except SystemExit as stop:
        return int(stop.code or 0)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(outputs, ignore_errors=True)
        if own_gradio_dir:  # run() called from Python: the next call gets a folder of its own
            os.environ.pop("GRADIO_TEMP_DIR", None)
