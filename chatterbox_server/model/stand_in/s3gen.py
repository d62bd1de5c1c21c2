"""A compute-faithful conditional_decoder: S3Gen (flow encoder + meanflow CFM estimator) and HiFT.

The real graph's structure with random weights, so one call costs what the real one costs (see
../shared/s3gen-decoder.md for the layer table and the measured times this reproduces):

* token embedding 6561 × 512; pre-lookahead convs (k4, k3);
* flow encoder: 6 pre-norm self-attention layers at 25 Hz over all L = P + N tokens (d 512, 8 heads,
  FFN 2048, a relative-position score term), nearest ×2 upsample + Conv1d k5, 4 more layers at
  50 Hz, Linear 512 → 80 (mu);
* CFM estimator (UNet-1D over 2L frames, input 320 = [x, mu, speaker, prompt mel]): 1 down + 12 mid
  + 1 up ResNet block (causal Conv1d k3, Mish), each followed by 4 transformer blocks (d 256,
  8 × 64 heads, FF 1024 GELU) = 56 blocks with full T × T attention, run twice (two Euler steps);
* the prompt's 2P frames cropped; HiFT over the 2N new frames: conv_pre 80 → 512 k7, ConvTranspose
  512 → 256 (k16 s8), 256 → 128 (k11 s5), 128 → 64 (k7 s3), after each the mean of 3 ResBlocks
  (k 3/7/11, dilations 1/3/5, Snake), an F0 predictor (5 × Conv1d k3 512) driving a sine source
  fused into every stage, conv_post and an ISTFT (n_fft 16, hop 4): 480 samples per mel frame.

Repeated blocks share weights (cycling through a few sets) so the files stay ~130 MB in fp32; the
compute is per block. Noise for the flow's starting point is drawn inside the graph, as in the real
export, but scaled small so two calls on the same tokens differ only slightly.
"""

from __future__ import annotations

import numpy as np

from chatterbox_server.model.stand_in.graphs import (
    F32,
    I64,
    INT64_MAX,
    MEL_BINS,
    SPEAKER_DIM,
    START_SPEECH,
    B,
    GraphBuilder,
    Weights,
)

FLOW_WIDTH, FLOW_HEADS, FLOW_FFN = 512, 8, 2048
FLOW_LAYERS_25HZ, FLOW_LAYERS_50HZ = 6, 4
EST_WIDTH, EST_HEADS, EST_HEAD_DIM, EST_FFN = 256, 8, 64, 1024
EST_MID_BLOCKS, EST_TRANSFORMERS_PER_BLOCK = 12, 4
EST_TIME_DIM = 1024
EULER_STEPS = 2  # meanflow: t = 0 → 0.5 → 1
HIFT_BASE, HIFT_RATES, HIFT_KERNELS = 512, (8, 5, 3), (16, 11, 7)
HIFT_RES_KERNELS, HIFT_RES_DILATIONS = (3, 7, 11), (1, 3, 5)
HIFT_SOURCE_KERNELS = (7, 7, 11)
N_FFT, HOP = 16, 4
N_BINS = N_FFT // 2 + 1  # 9
SINE_HARMONICS = 8
NOISE_SCALE = 1e-3  # the flow's starting noise, kept small so repeated calls agree closely
SHARED_SETS = {"flow": 2, "est_resnet": 2, "est_transformer": 4}  # distinct weight sets per kind
MAG_LOG_LIMIT = float(np.log(100.0))  # HiFT clamps the STFT magnitude at 1e2
AUDIO_LIMIT = 0.99


class _Decoder:
    """Builds the graph into `g`; `w(name, shape, std)` memoises weights so shared sets cost once."""

    def __init__(self, g: GraphBuilder, W: Weights):
        self.g, self.W = g, W
        self._cache: dict[str, str] = {}

    # ----- weights and primitives ----------------------------------------------------------
    def param(self, name: str, shape: tuple[int, ...], std: float, offset: float = 0.0) -> str:
        if name not in self._cache:
            value = self.W.normal(name, shape, std) + np.float32(offset) if std else np.full(shape, offset, np.float32)
            self._cache[name] = self.g.init(name, value.astype(self.g.cdt))
        return self._cache[name]

    def linear(self, x: str, name: str, k: int, n: int, std: float | None = None, bias: bool = True) -> str:
        w = self.W.normal(f"{name}.w", (k, n), std if std is not None else k**-0.5)
        b = np.zeros(n, np.float32) if bias else None
        return self.g.linear(x, name, w, b)

    def conv(
        self, x: str, name: str, cin: int, cout: int, k: int, dilation: int = 1, stride: int = 1,
        pads: tuple[int, int] | None = None, gain: float = 1.0,
    ) -> str:  # fmt: skip
        """Conv1d on [B, C, T]; 'same' padding unless pads is given."""
        if pads is None:
            total = dilation * (k - 1)
            pads = (total // 2, total - total // 2)
        w = self.param(f"{name}.w", (cout, cin, k), gain * (cin * k) ** -0.5)
        b = self.param(f"{name}.b", (cout,), 0.0)
        return self.g.op("Conv", x, w, b, kernel_shape=[k], dilations=[dilation], strides=[stride], pads=list(pads))

    def conv_transpose(self, x: str, name: str, cin: int, cout: int, k: int, stride: int) -> str:
        """ConvTranspose1d on [B, C, T] → [B, cout, stride · T] (padding (k − stride) / 2)."""
        pad = k - stride
        w = self.param(f"{name}.w", (cin, cout, k), (cin * k / stride) ** -0.5)
        b = self.param(f"{name}.b", (cout,), 0.0)
        return self.g.op("ConvTranspose", x, w, b, kernel_shape=[k], strides=[stride], pads=[pad // 2, pad - pad // 2])

    def channels_last(self, x: str) -> str:
        return self.g.op("Transpose", x, perm=[0, 2, 1])

    channels_first = channels_last

    def mish(self, x: str) -> str:
        g = self.g
        return g.op("Mul", x, g.op("Tanh", g.op("Softplus", x)))

    def snake(self, x: str, name: str, channels: int) -> str:
        """x + sin²(αx)/α with a per-channel α, on [B, C, T]."""
        g = self.g
        alpha = self.param(f"{name}.alpha", (1, channels, 1), 0.1, offset=1.0)
        s = g.op("Sin", g.op("Mul", x, alpha))
        return g.op("Add", x, g.op("Div", g.op("Mul", s, s), alpha))

    def attention(self, h: str, name: str, width: int, heads: int, head_dim: int, positions: str | None = None) -> str:
        """Full bidirectional self-attention on [B, T, width]; `positions` [T, width] adds a
        position-score term (the flow encoder's relative-position attention costs one more T × T)."""
        g = self.g
        inner = heads * head_dim
        qkv = self.linear(h, f"{name}.qkv", width, 3 * inner)
        q, k, v = g.op("Split", qkv, g.i64(inner, inner, inner), axis=-1, n_out=3)
        split = g.i64(0, 0, heads, head_dim)
        q, k, v = (g.op("Transpose", g.op("Reshape", t, split), perm=[0, 2, 1, 3]) for t in (q, k, v))
        q = g.op("Mul", q, g.const(head_dim**-0.5))
        scores = g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2]))  # [B, H, T, T]
        if positions is not None:
            p = self.linear(positions, f"{name}.pos", width, inner, bias=False)  # [T, inner]
            p = g.op("Transpose", g.op("Reshape", p, g.i64(0, heads, head_dim)), perm=[1, 2, 0])  # [H, hd, T]
            bias_u = self.param(f"{name}.pos_bias", (heads, 1, head_dim), 0.02)
            scores = g.op("Add", scores, g.op("MatMul", g.op("Add", q, bias_u), p))
        ctx = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        ctx = g.op("Reshape", g.op("Transpose", ctx, perm=[0, 2, 1, 3]), g.i64(0, 0, inner))
        return self.linear(ctx, f"{name}.out", inner, width, std=0.5 * inner**-0.5)

    def sinusoids(self, length: str, width: int) -> str:
        """[T, width] sinusoidal position table for a runtime length (int64 [1])."""
        g = self.g
        t = g.cast(g.op("Range", g.const(0, np.int64), g.op("Squeeze", length, g.i64(0)), g.const(1, np.int64)), F32)
        inv = (10_000.0 ** (-np.arange(0, width, 2, dtype=np.float32) / width)).reshape(1, -1)
        angles = g.op("Mul", g.op("Unsqueeze", t, g.i64(1)), g.const(inv, np.float32))
        return g.to_compute(g.op("Concat", g.op("Sin", angles), g.op("Cos", angles), axis=1))

    # ----- flow encoder --------------------------------------------------------------------
    def encoder_layer(self, h: str, name: str, positions: str) -> str:
        g = self.g
        a = g.layer_norm(h, f"{name}.ln1", FLOW_WIDTH)
        h = g.op("Add", h, self.attention(a, name, FLOW_WIDTH, FLOW_HEADS, FLOW_WIDTH // FLOW_HEADS, positions))
        f = self.linear(g.layer_norm(h, f"{name}.ln2", FLOW_WIDTH), f"{name}.ff1", FLOW_WIDTH, FLOW_FFN)
        f = g.op("Mul", f, g.op("Sigmoid", f))  # swish
        return g.op("Add", h, self.linear(f, f"{name}.ff2", FLOW_FFN, FLOW_WIDTH, std=0.5 * FLOW_FFN**-0.5))

    def flow_encoder(self, tokens: str) -> str:
        """int64 [B, L] → mu [B, 80, 2L]."""
        g = self.g
        ids = g.op("Clip", tokens, g.const(0, np.int64), g.const(START_SPEECH - 1, np.int64))
        table = self.param("flow.embed", (START_SPEECH, FLOW_WIDTH), 1.0)
        h = self.channels_first(g.op("Gather", table, ids))  # [B, 512, L]
        h = g.op("LeakyRelu", self.conv(h, "flow.lookahead1", FLOW_WIDTH, FLOW_WIDTH, 4, pads=(0, 3)), alpha=0.1)
        h = self.conv(h, "flow.lookahead2", FLOW_WIDTH, FLOW_WIDTH, 3, pads=(2, 0))
        h = self.channels_last(h)  # [B, L, 512]
        positions = self.sinusoids(g.dim(h, 1), FLOW_WIDTH)
        sets = SHARED_SETS["flow"]
        for i in range(FLOW_LAYERS_25HZ):
            h = self.encoder_layer(h, f"flow.enc{i % sets}", positions)
        # nearest ×2 upsample along time, then Conv1d k5
        doubled = g.op("Concat", g.op("Mul", g.dim(h, 1), g.i64(2)), g.i64(FLOW_WIDTH), axis=0)
        up = g.op("Reshape", g.op("Concat", h, h, axis=2), g.op("Concat", g.dim(h, 0), doubled, axis=0))
        up = self.conv(self.channels_first(up), "flow.up_conv", FLOW_WIDTH, FLOW_WIDTH, 5)
        h = self.channels_last(up)  # [B, 2L, 512]
        positions = self.sinusoids(g.dim(h, 1), FLOW_WIDTH)
        for i in range(FLOW_LAYERS_50HZ):
            h = self.encoder_layer(h, f"flow.up_enc{i % sets}", positions)
        h = g.layer_norm(h, "flow.ln_out", FLOW_WIDTH)
        return self.channels_first(self.linear(h, "flow.proj", FLOW_WIDTH, MEL_BINS))

    # ----- CFM estimator -------------------------------------------------------------------
    def resnet(self, x: str, name: str, cin: int, cout: int, time: str) -> str:
        """Causal ResNet block on [B, C, T] with the time embedding added after the first conv."""
        g = self.g

        def causal(y: str, suffix: str, c_in: int) -> str:
            y = self.conv(y, f"{name}.{suffix}", c_in, cout, 3, pads=(2, 0))
            y = self.channels_first(g.layer_norm(self.channels_last(y), f"{name}.{suffix}.ln", cout))
            return self.mish(y)

        h = causal(x, "conv1", cin)
        t = self.linear(self.mish(time), f"{name}.time", EST_TIME_DIM, cout)  # [1, cout]
        h = g.op("Add", h, g.op("Unsqueeze", t, g.i64(2)))
        h = causal(h, "conv2", cout)
        skip = x if cin == cout else self.conv(x, f"{name}.skip", cin, cout, 1)
        return g.op("Add", skip, g.op("Mul", h, g.const(0.5)))

    def transformer(self, h: str, name: str) -> str:
        g = self.g
        a = g.layer_norm(h, f"{name}.ln1", EST_WIDTH)
        h = g.op("Add", h, self.attention(a, name, EST_WIDTH, EST_HEADS, EST_HEAD_DIM))
        f = self.linear(g.layer_norm(h, f"{name}.ln2", EST_WIDTH), f"{name}.ff1", EST_WIDTH, EST_FFN)
        erf = g.op("Erf", g.op("Div", f, g.const(np.sqrt(2.0))))
        f = g.op("Mul", g.op("Mul", f, g.op("Add", erf, g.const(1.0))), g.const(0.5))  # GELU
        return g.op("Add", h, self.linear(f, f"{name}.ff2", EST_FFN, EST_WIDTH, std=0.5 * EST_FFN**-0.5))

    def block(self, x: str, index: int, cin: int, time: str) -> str:
        """ResNet block + 4 transformer blocks, [B, cin, T] → [B, 256, T]."""
        x = self.resnet(x, f"est.res{index % SHARED_SETS['est_resnet']}.{cin}", cin, EST_WIDTH, time)
        h = self.channels_last(x)
        for j in range(EST_TRANSFORMERS_PER_BLOCK):
            k = (index * EST_TRANSFORMERS_PER_BLOCK + j) % SHARED_SETS["est_transformer"]
            h = self.transformer(h, f"est.tf{k}")
        return self.channels_first(h)

    def estimator(self, x: str, mu: str, speaker: str, cond: str, step: int) -> str:
        """The velocity at Euler step `step`: inputs [B, 80, T] (speaker [B, 80, 1]) → [B, 80, T]."""
        g = self.g
        t = step / EULER_STEPS
        freqs = np.exp(-np.log(10_000.0) * np.arange(160, dtype=np.float32) / 160) * 1000.0 * t
        sinus = np.concatenate([np.sin(freqs), np.cos(freqs)])[None, :].astype(np.float32)  # [1, 320]
        time = self.linear(g.const(sinus), "est.time1", 320, EST_TIME_DIM)
        time = self.linear(self.mish(time), "est.time2", EST_TIME_DIM, EST_TIME_DIM)
        spk = g.op("Expand", speaker, g.op("Shape", x))
        h = g.op("Concat", x, mu, spk, cond, axis=1)  # [B, 320, T]
        h = self.block(h, 0, 4 * MEL_BINS, time)
        h = self.conv(h, "est.down", EST_WIDTH, EST_WIDTH, 3)
        skip = h
        for i in range(EST_MID_BLOCKS):
            h = self.block(h, 1 + i, EST_WIDTH, time)
        h = self.block(g.op("Concat", h, skip, axis=1), 1 + EST_MID_BLOCKS, 2 * EST_WIDTH, time)
        h = self.conv(h, "est.up", EST_WIDTH, EST_WIDTH, 3)
        h = self.mish(self.conv(h, "est.final", EST_WIDTH, EST_WIDTH, 3, pads=(2, 0)))
        return self.conv(h, "est.proj", EST_WIDTH, MEL_BINS, 1, gain=0.5)

    # ----- HiFT ----------------------------------------------------------------------------
    def resblock(self, x: str, name: str, channels: int, k: int, dilations: tuple[int, ...]) -> str:
        g = self.g
        for d in dilations:
            y = self.conv(self.snake(x, f"{name}.d{d}.s1", channels), f"{name}.d{d}.c1", channels, channels, k, d)
            y = self.conv(
                self.snake(y, f"{name}.d{d}.s2", channels), f"{name}.d{d}.c2", channels, channels, k, gain=0.3
            )
            x = g.op("Add", x, y)
        return x

    def sine_source(self, mel: str) -> str:
        """F0 from the mel, a harmonic sine source at 24 kHz, and its STFT: [B, 18, 240 · frames]."""
        g = self.g
        h = mel
        for i in range(5):
            h = g.op("Elu", self.conv(h, f"hift.f0.{i}", MEL_BINS if i == 0 else HIFT_BASE, HIFT_BASE, 3))
        f0 = self.linear(self.channels_last(h), "hift.f0.proj", HIFT_BASE, 1)  # [B, F, 1]
        f0 = g.to_float(g.op("Add", g.op("Mul", g.op("Sigmoid", f0), g.const(150.0)), g.const(80.0)))  # Hz
        per_frame = int(np.prod(HIFT_RATES)) * HOP  # 480 samples
        samples = g.op("Mul", g.dim(f0, 1), g.i64(per_frame))
        f0 = g.op(
            "Expand",
            g.op("Unsqueeze", f0, g.i64(2)),
            g.op("Concat", g.dim(f0, 0), g.dim(f0, 1), g.i64(per_frame, 1), axis=0),
        )
        f0 = g.op("Reshape", f0, g.op("Concat", g.dim(f0, 0), samples, g.i64(1), axis=0))  # [B, S, 1]
        harmonics = np.arange(1, SINE_HARMONICS + 1, dtype=np.float32).reshape(1, 1, -1) / 24_000.0
        phase = g.op("CumSum", g.op("Mul", f0, g.const(harmonics, np.float32)), g.const(1, np.int64))
        phase = g.op("Mod", phase, g.const(1.0, np.float32), fmod=1)
        sines = g.op("Sin", g.op("Mul", phase, g.const(2 * np.pi, np.float32)))  # [B, S, 8]
        source = g.op("Tanh", self.linear(g.to_compute(sines), "hift.source_merge", SINE_HARMONICS, 1))
        # STFT (n_fft 16, hop 4, Hann) as a strided Conv1d with a fixed DFT basis
        n = np.arange(N_FFT)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)
        freqs = np.arange(N_BINS)[:, None] * n[None, :] * 2 * np.pi / N_FFT
        basis = np.concatenate([np.cos(freqs), -np.sin(freqs)]) * window  # [18, 16]
        basis_name = self.g.init("hift.stft_basis", basis[:, None, :].astype(self.g.cdt))
        pad = (N_FFT - HOP) // 2
        return g.op(
            "Conv", self.channels_first(source), basis_name, kernel_shape=[N_FFT], strides=[HOP], pads=[pad, pad]
        )

    def hift(self, mel: str) -> str:
        """mel [B, 80, F] → waveform float32 [B, 480 · F]."""
        g = self.g
        source = self.sine_source(mel)  # [B, 18, 120 · F]
        x = self.conv(mel, "hift.conv_pre", MEL_BINS, HIFT_BASE, 7)
        channels = HIFT_BASE
        remaining = int(np.prod(HIFT_RATES))
        for i, (rate, k) in enumerate(zip(HIFT_RATES, HIFT_KERNELS)):
            out = channels // 2
            x = self.conv_transpose(g.op("LeakyRelu", x, alpha=0.1), f"hift.up{i}", channels, out, k, rate)
            remaining //= rate
            # the source at this stage's frame rate, through its own ResBlock
            down_k = 2 * remaining if remaining > 1 else 1
            extra = down_k - remaining  # pads that make the output exactly this stage's length
            s = self.conv(source, f"hift.source_down{i}", 2 * N_BINS, out, down_k, stride=remaining,
                          pads=(extra // 2, extra - extra // 2))  # fmt: skip
            s = self.resblock(s, f"hift.source_res{i}", out, HIFT_SOURCE_KERNELS[i], HIFT_RES_DILATIONS)
            x = g.op("Add", x, s)
            blocks = [self.resblock(x, f"hift.res{i}.{kk}", out, kk, HIFT_RES_DILATIONS) for kk in HIFT_RES_KERNELS]
            x = g.op("Mul", g.op("Sum", *blocks), g.const(1.0 / len(blocks)))
            channels = out
        x = self.conv(
            g.op("LeakyRelu", x, alpha=0.1), "hift.conv_post", channels, 2 * N_BINS, 7, gain=0.3
        )  # unclipped level
        x = g.to_float(x)
        log_mag, phase = g.op("Split", x, g.i64(N_BINS, N_BINS), axis=1, n_out=2)
        mag = g.op("Exp", g.op("Clip", log_mag, g.const(-20.0, np.float32), g.const(MAG_LOG_LIMIT, np.float32)))
        phase = g.op("Sin", phase)
        spectrum = g.op("Concat", g.op("Mul", mag, g.op("Cos", phase)), g.op("Mul", mag, g.op("Sin", phase)), axis=1)
        # inverse STFT as a ConvTranspose with the windowed inverse DFT basis (overlap-add)
        n = np.arange(N_FFT)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)
        weights = np.full(N_BINS, 2.0)
        weights[[0, -1]] = 1.0
        freqs = np.arange(N_BINS)[:, None] * n[None, :] * 2 * np.pi / N_FFT
        inverse = np.concatenate([weights[:, None] * np.cos(freqs), -weights[:, None] * np.sin(freqs)])
        inverse = (inverse * window / N_FFT / (np.sum(window**2) / HOP))[:, None, :].astype(np.float32)  # [18, 1, 16]
        pad = (N_FFT - HOP) // 2
        wave = g.op("ConvTranspose", spectrum, g.init("hift.istft_basis", inverse), kernel_shape=[N_FFT],
                    strides=[HOP], pads=[pad, pad])  # fmt: skip
        wave = g.op("Clip", wave, g.const(-AUDIO_LIMIT, np.float32), g.const(AUDIO_LIMIT, np.float32))
        return g.op("Squeeze", wave, g.i64(1))

    # ----- the whole call ------------------------------------------------------------------
    def build(self) -> None:
        g = self.g
        tokens = g.input("speech_tokens", I64, [B, "num_speech_tokens"])
        emb = g.input("speaker_embeddings", F32, [B, SPEAKER_DIM])
        feats = g.input("speaker_features", F32, [B, "feature_frames", MEL_BINS])
        prompt_frames = g.op("Mul", g.op("Div", g.dim(feats, 1), g.i64(2)), g.i64(2))  # 2P
        mu = self.flow_encoder(tokens)  # [B, 80, 2L]
        frames = g.dim(mu, 2)
        norm = g.op("Sqrt", g.op("ReduceSumSquare", emb, axes=[-1], keepdims=1))
        unit = g.op("Div", emb, g.op("Add", norm, g.const(1e-6, np.float32)))
        speaker = self.linear(g.to_compute(unit), "flow.spk_affine", SPEAKER_DIM, MEL_BINS)
        speaker = g.op("Unsqueeze", speaker, g.i64(2))  # [B, 80, 1]
        prompt = g.slice(g.to_compute(feats), [0], prompt_frames, [1])  # [B, 2P, 80]
        pad = g.op("Concat", g.i64(0, 0, 0, 0), g.op("Sub", frames, prompt_frames), g.i64(0), axis=0)
        cond = self.channels_first(g.op("Pad", prompt, pad))  # [B, 80, 2L]: the prompt's mel, then zeros
        noise = g.op("RandomNormalLike", mu, scale=NOISE_SCALE)
        x = noise
        for step in range(EULER_STEPS):
            velocity = self.estimator(x, mu, speaker, cond, step)
            x = g.op("Add", x, g.op("Mul", velocity, g.const(1.0 / EULER_STEPS)))
        new = g.slice(x, prompt_frames, [INT64_MAX], [2])  # the prompt's frames cropped: [B, 80, 2N]
        g.op("Identity", self.hift(new), out="waveform")
        g.output("waveform", F32, [B, "num_samples"])


def build_s3gen_decoder(g: GraphBuilder, W: Weights) -> None:
    """speech_tokens [B, T], speaker_embeddings [B, 192], speaker_features [B, F, 80]
    -> waveform float32 [B, (T - F // 2) * 960], at the real decoder's cost."""
    _Decoder(g, W).build()
