"""Log-mel spectrogram as a Keras layer (tf.signal STFT inside the model)."""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

NORMALIZATIONS = ("utterance", "none")


@keras.saving.register_keras_serializable(package="mmkeras")
class LogMelSpectrogram(layers.Layer):
    """Turns waveforms into normalised log-mel frames, inside the model.

    Computing features in the model means training, evaluation and the
    exported serving signature all take raw waveforms and can never disagree
    on the feature recipe. Per-utterance normalisation (each mel bin to zero
    mean and unit variance over the clip's frames) removes recording gain and
    channel colour, which matters more on small real data than anything else.

    Args:
      sample_rate: waveform sample rate in Hz.
      frame_ms: analysis window length in milliseconds.
      hop_ms: hop between frames in milliseconds.
      num_mel_bins: mel bands.
      lower_hz: lowest mel band edge.
      upper_hz: highest mel band edge (default: the Nyquist frequency).
      normalization: "utterance" (per clip, per bin) or "none".

    Call arguments:
      waveforms: (batch, samples) float tensor in [-1, 1].

    Returns:
      (batch, frames, num_mel_bins) float32 tensor.

    Example:
      >>> LogMelSpectrogram(sample_rate=8000)(np.zeros((2, 8000), "float32")).shape
      TensorShape([2, 50, 40])
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_ms: float = 25.0,
        hop_ms: float = 20.0,
        num_mel_bins: int = 40,
        lower_hz: float = 20.0,
        upper_hz: float | None = None,
        normalization: str = "utterance",
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # STFT in float16 loses the quiet bands
        super().__init__(**kwargs)
        if sample_rate <= 0 or frame_ms <= 0 or hop_ms <= 0 or num_mel_bins <= 0:
            raise ValueError(
                "sample_rate, frame_ms, hop_ms and num_mel_bins must be positive, got "
                f"{sample_rate}, {frame_ms}, {hop_ms}, {num_mel_bins}."
            )
        upper = upper_hz if upper_hz is not None else sample_rate / 2
        if not 0 <= lower_hz < upper <= sample_rate / 2:
            raise ValueError(
                f"Need 0 <= lower_hz < upper_hz <= sample_rate / 2, got {lower_hz}, {upper}, {sample_rate / 2}."
            )
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"Unknown normalization {normalization!r}. Expected one of {list(NORMALIZATIONS)}.")
        self.sample_rate = int(sample_rate)
        self.frame_ms = float(frame_ms)
        self.hop_ms = float(hop_ms)
        self.num_mel_bins = int(num_mel_bins)
        self.lower_hz = float(lower_hz)
        self.upper_hz = None if upper_hz is None else float(upper_hz)
        self.normalization = normalization
        self.frame_length = int(round(self.sample_rate * self.frame_ms / 1000))
        self.frame_step = int(round(self.sample_rate * self.hop_ms / 1000))
        self.fft_length = 1 << (self.frame_length - 1).bit_length()

    @classmethod
    def for_feature(cls, feature, **kwargs) -> LogMelSpectrogram:
        """The layer for an audio feature of a spec: its sample rate, frames and mel bins.

        Args:
          feature: an audio `FeatureSpec` (uses sample_rate, frame_ms, hop_ms, num_mel_bins).
          **kwargs: other layer arguments (`normalization`, `name`, ...).

        Example:
          >>> LogMelSpectrogram.for_feature(spec.feature("sound")).num_mel_bins
          40
        """
        options = feature.options
        return cls(
            sample_rate=int(options["sample_rate"]), frame_ms=float(options["frame_ms"]),
            hop_ms=float(options["hop_ms"]), num_mel_bins=int(options["num_mel_bins"]), **kwargs,
        )

    def build(self, waveforms_shape):
        self.mel_matrix = tf.signal.linear_to_mel_weight_matrix(
            num_mel_bins=self.num_mel_bins,
            num_spectrogram_bins=self.fft_length // 2 + 1,
            sample_rate=self.sample_rate,
            lower_edge_hertz=self.lower_hz,
            upper_edge_hertz=self.upper_hz or self.sample_rate / 2,
        )

    def call(self, waveforms):
        waveforms = tf.cast(waveforms, tf.float32)
        stft = tf.signal.stft(
            waveforms, self.frame_length, self.frame_step, self.fft_length, pad_end=True
        )
        mel = tf.tensordot(tf.abs(stft) ** 2, self.mel_matrix, 1)
        log_mel = tf.math.log(mel + 1e-6)
        if self.normalization == "utterance":
            mean, variance = tf.nn.moments(log_mel, axes=[1], keepdims=True)
            log_mel = (log_mel - mean) * tf.math.rsqrt(variance + 1e-3)
        return log_mel

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a clip of `num_samples` samples."""
        return -(-num_samples // self.frame_step)

    def compute_output_shape(self, waveforms_shape):
        samples = waveforms_shape[-1]
        frames = None if samples is None else self.num_frames(samples)
        return (waveforms_shape[0], frames, self.num_mel_bins)

    def get_config(self):
        config = super().get_config()
        config.update(
            sample_rate=self.sample_rate,
            frame_ms=self.frame_ms,
            hop_ms=self.hop_ms,
            num_mel_bins=self.num_mel_bins,
            lower_hz=self.lower_hz,
            upper_hz=self.upper_hz,
            normalization=self.normalization,
        )
        return config
