"""Reading training media: image modes and orientation, video containers, damaged files."""

import numpy as np
import pytest
from PIL import Image, ImageCms

from ltx_jax.data import media
from ltx_jax.errors import DataError

A = (np.arange(48 * 64).reshape(48, 64) % 251).astype(np.uint8)  # [H=48, W=64]
RGB = np.dstack([A, 255 - A, A // 2])


def test_image_modes_become_rgb_uint8(tmp_path):
  srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()
  Image.fromarray(RGB).save(tmp_path / 'rgb.png')
  Image.fromarray(A).save(tmp_path / 'grey.jpg', quality=100)
  Image.fromarray(A.astype(np.uint16) * 257).save(tmp_path / 'grey16.png')
  Image.fromarray(np.dstack([RGB, A])).save(tmp_path / 'rgba.png')
  Image.fromarray(RGB).save(tmp_path / 'icc.png', icc_profile=srgb)
  Image.fromarray(A).save(tmp_path / 'grey_rgb_icc.png', icc_profile=srgb)  # mismatched profile
  for name in ('rgb.png', 'rgba.png', 'icc.png'):
    clip = media.read_clip(tmp_path / name, 9)
    assert clip.fps is None and clip.available == 1
    np.testing.assert_array_equal(clip.frames[0], RGB)
  for name in ('grey16.png', 'grey_rgb_icc.png'):
    np.testing.assert_array_equal(media.read_clip(tmp_path / name, 9).frames[0],
                                  np.dstack([A] * 3))
  grey = media.read_clip(tmp_path / 'grey.jpg', 9).frames[0]
  assert grey.shape == (48, 64, 3) and np.abs(grey.astype(int) - A[..., None]).max() <= 2


def test_exif_orientation_is_applied(tmp_path):
  im = Image.fromarray(RGB)
  exif = im.getexif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise to display
  im.save(tmp_path / 'rot.png', exif=exif)
  frames = media.read_clip(tmp_path / 'rot.png', 1).frames
  np.testing.assert_array_equal(frames[0], np.rot90(RGB, k=-1))


@pytest.mark.parametrize('name, codec', [('a.webm', 'libvpx-vp9'), ('a.avi', 'mpeg4'),
                                         ('a.mov', 'libx264'), ('a.mkv', 'libx264')])
def test_video_containers(tmp_path, name, codec):
  import imageio_ffmpeg
  gen = imageio_ffmpeg.write_frames(str(tmp_path / name), (64, 48), fps=10, codec=codec,
                                    macro_block_size=1, ffmpeg_log_level='error',
                                    pix_fmt_out='yuv420p')
  gen.send(None)
  for i in range(12):
    gen.send(np.full((48, 64, 3), i * 20, np.uint8).tobytes())
  gen.close()
  clip = media.read_clip(tmp_path / name, 9)
  assert clip.frames.shape == (9, 48, 64, 3) and clip.fps == 10.0 and clip.available == 9
  # Frames from the start, in order: the grey level rises by 20 a frame.
  assert np.all(np.diff(clip.frames.mean(axis=(1, 2, 3))) > 10)
  half = media.read_clip(tmp_path / name, 9, target_fps=5.0)
  assert half.available == 6 and half.fps == 5.0
  np.testing.assert_array_equal(half.frames, media.read_clip(tmp_path / name, 12).frames[::2])


def test_damaged_media_are_one_line_data_errors(tmp_path):
  (tmp_path / 'empty.mp4').write_bytes(b'')
  (tmp_path / 'text.mov').write_text('not a video')
  Image.fromarray(RGB).save(tmp_path / 'cut.png')
  (tmp_path / 'cut.png').write_bytes((tmp_path / 'cut.png').read_bytes()[:200])
  (tmp_path / 'text.jpg').write_text('not an image')
  for name, why in (('empty.mp4', 'unreadable video'), ('text.mov', 'unreadable video'),
                    ('cut.png', 'image'), ('text.jpg', 'not an image'),
                    ('missing.mp4', 'no such file')):
    with pytest.raises(DataError, match=why) as e:
      media.read_clip(tmp_path / name, 9)
    assert '\n' not in str(e.value)
