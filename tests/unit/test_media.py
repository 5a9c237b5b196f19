"""ffprobe JSON -> MediaInfo parsing (pure; the JSON is written out here)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from vs_scripts.plan.media import ProbeError, check_header, is_vfr, parse_ffprobe


def ffprobe_json(**video: object) -> dict:
    v = {
        "index": 0,
        "codec_type": "video",
        "codec_name": "h264",
        "width": 1280,
        "height": 720,
        "pix_fmt": "yuv420p",
        "r_frame_rate": "24/1",
        "avg_frame_rate": "24/1",
        "nb_frames": "48",
        "duration": "2.000000",
        "start_time": "0.000000",
        "color_space": "bt709",
        "color_transfer": "bt709",
        "color_primaries": "bt709",
        "color_range": "tv",
    }
    v.update(video)
    return {
        "streams": [
            v,
            {
                "index": 1,
                "codec_type": "audio",
                "codec_name": "aac",
                "sample_rate": "44100",
                "channels": 2,
                "duration": "2.01",
                "start_time": "0.021333",
            },
        ],
        "format": {
            "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
            "duration": "2.01",
            "bit_rate": "900000",
        },
    }


def test_cfr_clip() -> None:
    info = parse_ffprobe(ffprobe_json(), path="a.mp4")
    assert (info.width, info.height, info.fps, info.frame_count) == (1280, 720, Fraction(24), 48)
    assert not info.vfr
    assert info.matrix == "bt709" and info.color_range == "tv"
    assert info.audio[0].sample_rate == 44100 and info.audio[0].channels == 2
    assert info.audio[0].start_time == pytest.approx(0.021333)
    assert info.bitrate == 900000
    assert info.to_json()["fps"] == "24/1"


def test_untagged_colour_is_none() -> None:
    info = parse_ffprobe(
        ffprobe_json(color_space="unknown", color_transfer="", color_primaries="reserved"),
        path="a.mp4",
    )
    assert info.matrix is None and info.transfer is None and info.primaries is None


def test_vfr_from_header_rates() -> None:
    info = parse_ffprobe(ffprobe_json(r_frame_rate="24/1", avg_frame_rate="18/1"), path="a.mp4")
    assert info.vfr


def test_vfr_and_count_from_packet_times() -> None:
    pts = [i / 12 for i in range(12)] + [1 + i / 24 for i in range(24)]
    info = parse_ffprobe(ffprobe_json(nb_frames="0"), path="v.mp4", packet_pts=pts[::-1])
    assert info.vfr
    assert info.frame_count == 36


def test_keyframes_come_with_the_packet_times() -> None:
    pts = [i / 24 for i in range(48)]
    keys = [1.0, 0.0]  # in packet order, which need not be presentation order
    info = parse_ffprobe(ffprobe_json(), path="k.mp4", packet_pts=pts, packet_keys=keys)
    assert info.keyframes == (0.0, 1.0)
    assert info.to_json()["keyframes"] == (0.0, 1.0)  # in probe.json beside the rest
    # a probe that read no packets knows none (the chunk planner then reads them itself)
    assert parse_ffprobe(ffprobe_json(), path="k.mp4").keyframes is None
    assert parse_ffprobe(ffprobe_json(), path="k.mp4", packet_pts=pts).keyframes is None
    # intra-only (every frame a keyframe): none listed, a chunk may start anywhere
    intra = parse_ffprobe(ffprobe_json(), path="k.mp4", packet_pts=pts, packet_keys=pts)
    assert intra.keyframes == ()


def test_is_vfr_tolerates_timestamp_rounding() -> None:
    pts = [round(i * 1001 / 30000, 3) for i in range(60)]  # ms-rounded 29.97
    assert not is_vfr(pts)


@pytest.mark.parametrize(
    ("side", "tags", "expected"),
    [
        ([{"side_data_type": "Display Matrix", "rotation": -90}], {}, 270),
        ([], {"rotate": "90"}, 90),
        ([], {}, 0),
    ],
)
def test_rotation(side: list, tags: dict, expected: int) -> None:
    info = parse_ffprobe(ffprobe_json(side_data_list=side, tags=tags), path="r.mp4")
    assert info.rotation == expected


def test_ten_bit() -> None:
    info = parse_ffprobe(ffprobe_json(pix_fmt="yuv420p10le"), path="a.mkv")
    assert info.bit_depth == 10


def test_no_video_is_a_clear_error() -> None:
    data = ffprobe_json()
    data["streams"] = data["streams"][1:]
    with pytest.raises(ProbeError, match="no video stream"):
        parse_ffprobe(data, path="song.m4a")


def test_cover_art_is_not_the_video() -> None:
    data = ffprobe_json()
    art = dict(data["streams"][0], codec_name="mjpeg", disposition={"attached_pic": 1})
    data["streams"] = [art, *data["streams"][1:]]
    with pytest.raises(ProbeError):
        parse_ffprobe(data, path="a.m4a")


def test_no_frames_is_a_clear_error() -> None:
    data = ffprobe_json(nb_frames="0", duration="0")
    data["format"] = {}
    with pytest.raises(ProbeError, match="no frames"):
        parse_ffprobe(data, path="t.mp4")


def test_truncated_file_header_lists_more_frames_than_present() -> None:
    with pytest.raises(ProbeError, match="truncated"):
        parse_ffprobe(
            ffprobe_json(nb_frames="48"), path="t.mp4", packet_pts=[i / 24 for i in range(30)]
        )


def _refusal(data: dict, path: str) -> str:
    with pytest.raises(ProbeError) as info:
        parse_ffprobe(data, path=path)
    return str(info.value)


@pytest.mark.parametrize(
    "video",
    [
        {"field_order": "tt"},  # interlaced
        {"width": 20000},  # oversized
        {"width": 0},  # no frame size
    ],
)
def test_check_header_refuses_what_parse_ffprobe_does_in_its_words(video: dict) -> None:
    data = ffprobe_json(**video)
    with pytest.raises(ProbeError) as info:
        check_header(data, path="clip.mp4")
    assert str(info.value) == _refusal(data, "clip.mp4")


def test_check_header_refuses_a_file_without_video() -> None:
    data = ffprobe_json()
    data["streams"] = data["streams"][1:]
    with pytest.raises(ProbeError) as info:
        check_header(data, path="song.m4a")
    assert str(info.value) == _refusal(data, "song.m4a")


def test_check_header_passes_a_clip_and_leaves_images_to_parse_ffprobe() -> None:
    check_header(ffprobe_json(), path="clip.mp4")  # a clip: decoding may start
    png = ffprobe_json(codec_name="png", width=0)  # an image: its own message, later
    png["format"]["format_name"] = "png_pipe"
    check_header(png, path="still.png")
    assert "image" in _refusal(png, "still.png")
