"""The probe's refusal rules: what a file is and what to do, in one sentence (pure; synthetic
ffprobe JSON and byte heads)."""

from __future__ import annotations

import pytest

from vs_scripts.plan.media import (
    MAX_SIDE,
    ProbeError,
    deinterlace_hint,
    parse_ffprobe,
    unreadable_reason,
)


def video(**fields: object) -> dict:
    v = {
        "index": 0,
        "codec_type": "video",
        "codec_name": "h264",
        "width": 640,
        "height": 360,
        "pix_fmt": "yuv420p",
        "r_frame_rate": "24/1",
        "avg_frame_rate": "24/1",
        "nb_frames": "24",
        "duration": "1.000000",
        "field_order": "progressive",
    }
    v.update(fields)
    return v


def audio(codec: str = "aac", index: int = 1) -> dict:
    return {
        "index": index,
        "codec_type": "audio",
        "codec_name": codec,
        "sample_rate": "44100",
        "channels": 2,
    }


def probe_json(*streams: dict, format_name: str = "mov,mp4,m4a,3gp,3g2,mj2") -> dict:
    return {"streams": list(streams), "format": {"format_name": format_name, "duration": "1.0"}}


def refusal(data: dict, path: str = "/in/clip.mp4", pts: list[float] | None = None) -> str:
    with pytest.raises(ProbeError) as exc:
        parse_ffprobe(data, path=path, packet_pts=pts)
    msg = str(exc.value)
    assert msg.startswith(path + ": ") and "\n" not in msg
    return msg


# -- still images ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "fmt", "name"),
    [
        ("mjpeg", "jpeg_pipe", "a JPEG image"),
        ("mjpeg", "image2", "a JPEG image"),
        ("png", "png_pipe", "a PNG image"),
        ("gif", "gif", "a GIF image"),
        ("bmp", "bmp_pipe", "a BMP image"),
        ("webp", "webp_pipe", "a WebP image"),
        ("tiff", "tiff_pipe", "a TIFF image"),
        ("exr", "exr_pipe", "an OpenEXR image"),
        ("qoi", "qoi_pipe", "a QOI image"),
    ],
)
def test_a_still_image_is_named_and_refused(codec: str, fmt: str, name: str) -> None:
    data = probe_json(video(codec_name=codec, nb_frames="1", duration="0.04"), format_name=fmt)
    msg = refusal(data, pts=[0.0])
    assert f"is {name}, not a video clip; export it as a video (e.g. MP4)" in msg


def test_an_unknown_image_pipe_is_named_after_its_demuxer() -> None:
    data = probe_json(video(codec_name="vbn"), format_name="vbn_pipe")
    assert "is a VBN image" in refusal(data)


def test_an_animated_gif_is_refused_with_a_conversion_command() -> None:
    data = probe_json(video(codec_name="gif", nb_frames="6"), format_name="gif")
    msg = refusal(data, path="/in/loop cat.gif", pts=[i / 10 for i in range(6)])
    assert "is an animated GIF (6 frames)" in msg
    assert "`ffmpeg -i 'loop cat.gif' 'loop cat-video.mp4'`" in msg


def test_an_animated_gif_counts_frames_without_packet_times() -> None:
    data = probe_json(video(codec_name="gif", nb_frames="12"), format_name="gif")
    assert "animated GIF (12 frames)" in refusal(data)


@pytest.mark.parametrize(("codec", "fmt"), [("mjpeg", "avi"), ("png", "mov,mp4,m4a,3gp,3g2,mj2")])
def test_image_codecs_in_a_video_container_are_video(codec: str, fmt: str) -> None:
    """Motion JPEG from a camera, PNG-coded screen recordings: real clips."""
    info = parse_ffprobe(probe_json(video(codec_name=codec), format_name=fmt), path="c.avi")
    assert info.codec == codec and info.frame_count == 24


def test_a_one_frame_h264_clip_is_still_a_clip() -> None:
    info = parse_ffprobe(probe_json(video(nb_frames="1")), path="one.mp4", packet_pts=[0.0])
    assert info.frame_count == 1


# -- no video stream ---------------------------------------------------------------------------


def test_audio_only_names_the_codec() -> None:
    msg = refusal(probe_json(audio("mp3", index=0), format_name="mp3"))
    assert "is an audio file (mp3) with no video stream; drop the video clip instead." in msg


def test_music_with_cover_art_is_audio() -> None:
    art = video(codec_name="png", disposition={"attached_pic": 1})
    msg = refusal(probe_json(audio(index=0), art))
    assert "is an audio file (aac) with cover art and no video stream" in msg


def test_subtitles_only() -> None:
    subs = {"index": 0, "codec_type": "subtitle", "codec_name": "subrip"}
    assert "holds only subtitles (subrip), no video stream" in refusal(
        probe_json(subs, format_name="matroska,webm")
    )


def test_cover_art_alone() -> None:
    art = video(codec_name="mjpeg", disposition={"attached_pic": 1})
    assert "holds only a still picture (cover art)" in refusal(probe_json(art))


def test_no_streams_at_all() -> None:
    assert "no streams at all" in refusal(probe_json())


# -- frame size and interlacing ----------------------------------------------------------------


def test_a_frame_larger_than_any_real_video_is_refused() -> None:
    msg = refusal(probe_json(video(width=20000, height=10000)))
    assert "claims a 20000x10000 frame, larger than finishline can process" in msg
    assert str(MAX_SIDE) in msg


def test_the_largest_accepted_side() -> None:
    info = parse_ffprobe(probe_json(video(width=MAX_SIDE, height=2)), path="w.mp4")
    assert info.width == MAX_SIDE


@pytest.mark.parametrize(
    ("order", "first"), [("tt", "top"), ("tb", "top"), ("bb", "bottom"), ("bt", "bottom")]
)
def test_interlaced_is_refused_with_a_deinterlace_command(order: str, first: str) -> None:
    msg = refusal(probe_json(video(field_order=order)), path="/tapes/wedding 1998.mpg")
    assert f"is interlaced ({first} field first)" in msg
    assert "`ffmpeg -i 'wedding 1998.mpg' -vf bwdif -c:a copy 'wedding 1998-progressive.mkv'`" in (
        msg
    )


@pytest.mark.parametrize("order", ["progressive", "unknown", "", None])
def test_progressive_or_unknown_field_order_is_accepted(order: str | None) -> None:
    v = video(field_order=order)
    if order is None:
        del v["field_order"]
    assert parse_ffprobe(probe_json(v), path="p.mp4").frame_count == 24


def test_deinterlace_hint_plain_name() -> None:
    assert deinterlace_hint("/a/b/tape.mpg") == (
        "ffmpeg -i tape.mpg -vf bwdif -c:a copy tape-progressive.mkv"
    )


# -- files ffprobe cannot open -----------------------------------------------------------------

INVALID = "file:/x/a.mp4: Invalid data found when processing input"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (bytes(4096), "holds only zero bytes"),
        (b"<!DOCTYPE html>\n<html><body>403</body></html>", "is a web page (HTML)"),
        (b"  \n<html lang=en>", "is a web page (HTML)"),
        (b"%PDF-1.4\n%\xe2\xe3", "is a PDF document, not a video"),
        (b"PK\x03\x04\x14\x00", "is a ZIP archive, not a video; extract the video"),
        (b"Rar!\x1a\x07\x01\x00", "is a RAR archive"),
        (b"\x7fELF\x02\x01", "is a program (ELF executable)"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "is a damaged JPEG image"),
        (b"this is not a video\n" * 20, "is a text file, not a video"),
        ("titre de l'été\n".encode() * 5, "is a text file, not a video"),
    ],
)
def test_unreadable_files_are_named_by_their_first_bytes(head: bytes, expected: str) -> None:
    reason = unreadable_reason(head, INVALID)
    assert expected in reason and reason.endswith(".") and "\n" not in reason


def test_text_cut_mid_character_is_still_text() -> None:
    head = ("é" * 100).encode()[:-1]
    assert "text file" in unreadable_reason(head, INVALID)


def test_a_missing_moov_says_the_copy_is_incomplete() -> None:
    errors = "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0] moov atom not found\n" + INVALID
    reason = unreadable_reason(b"\x00\x00\x00\x20ftypisom" + bytes(64) + b"mdat", errors)
    assert "its index (moov) is missing" in reason and "copy it again" in reason


def test_an_impossible_picture_size() -> None:
    errors = "[IMGUTILS @ 0x7ffe] Picture size 40000x40000 is invalid\nDevice or resource busy"
    reason = unreadable_reason(b"YUV4MPEG2 W40000 H40000", errors)
    assert "claims an impossible 40000x40000 frame; the file is damaged" in reason


def test_random_bytes_fall_back_to_ffprobe_words() -> None:
    import random

    head = random.Random(1).randbytes(4096)
    reason = unreadable_reason(head, "[mpeg @ 0x1] junk\n" + INVALID)
    assert "is not a video file ffprobe can read (" in reason
    assert "Invalid data found when processing input" in reason and "[mpeg" not in reason


def test_empty_head_is_not_called_text() -> None:
    assert "ffprobe can read" in unreadable_reason(b"", "")


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", "Matroska/WebM"),
        (b"\x12\x34\x56\x78garbage" + b"\x00\x00\x10\x00moov", "MP4/MOV"),
        (b"RIFF\x00\x10\x00\x00AVI LIST", "AVI"),
        (b"OggS\x00\x02", "Ogg"),
        (b"G" + bytes(187) + b"G" + bytes(187) + b"G" + bytes(10), "MPEG-TS"),
    ],
)
def test_a_damaged_container_is_named(head: bytes, kind: str) -> None:
    reason = unreadable_reason(
        head, "[matroska,webm @ 0x1] File ended prematurely\nInput/output error"
    )
    assert f"is a damaged or incomplete {kind} file (Input/output error); copy it again" in reason


def test_moov_missing_only_for_files_that_start_like_mp4() -> None:
    """ffprobe says 'moov atom not found' for anything named .mp4; text is still text."""
    errors = "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] moov atom not found\n" + INVALID
    assert "text file" in unreadable_reason(b"hello\n" * 30, errors)
    assert "moov" not in unreadable_reason(bytes([1, 2, 3, 250]) * 100, errors)


# -- a file that ends early --------------------------------------------------------------------

EARLY = "[matroska,webm @ 0x5615] File ended prematurely\n"


def mkv(duration_tag: str = "00:00:01.023000000", **fields: object) -> dict:
    return probe_json(
        video(nb_frames=None, duration=None, tags={"DURATION": duration_tag}, **fields),
        format_name="matroska,webm",
    )


def test_a_truncated_matroska_is_refused_not_delivered_short() -> None:
    pts = [0.023 + i / 12 for i in range(5)]
    with pytest.raises(ProbeError, match=r"ends early.*0\.44 s of the 1\.02 s.*truncated.*copy"):
        parse_ffprobe(mkv(), path="cut.mkv", packet_pts=pts, read_errors=EARLY)


def test_a_complete_matroska_with_the_same_warning_is_accepted() -> None:
    """Only the index (Cues) was cut: every frame is there."""
    pts = [0.023 + i / 12 for i in range(12)]
    info = parse_ffprobe(mkv(), path="ok.mkv", packet_pts=pts, read_errors=EARLY)
    assert info.frame_count == 12


def test_frames_short_of_the_header_without_a_read_error_are_accepted() -> None:
    """A VFR clip whose last frame is held: the header is longer than the packet span."""
    pts = [i / 12 for i in range(5)]
    assert parse_ffprobe(mkv(), path="held.mkv", packet_pts=pts).frame_count == 5


def test_an_offset_start_is_not_truncation() -> None:
    pts = [10 + i / 12 for i in range(6)]
    data = mkv(duration_tag="00:00:10.500000000")
    info = parse_ffprobe(data, path="o.mkv", packet_pts=pts, read_errors=EARLY)
    assert info.frame_count == 6
