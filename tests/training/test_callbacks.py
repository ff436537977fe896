"""The run's callbacks: early stopping that survives a resume, no work after each training step, and backups
written on a schedule."""
from __future__ import annotations

import csv

import keras
import numpy as np
import pytest

from mmkeras.training.callbacks import (
    AwaitDecoding,
    BackupSchedule,
    BestModelCheckpoint,
    EpochAwareBackupAndRestore,
    EpochTensorBoard,
    RareTokenDropoutWarmup,
    ResumableEarlyStopping,
    make_callbacks,
)
from mmkeras.training.run_dir import RunPaths, fill_keras_save_cache, read_history, save_model


def _model(seed: int) -> keras.Model:
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, kernel_initializer=keras.initializers.RandomNormal(seed=seed))(inputs))


def _run(callback, model, values, first_epoch):
    """Drive the callback as `fit` would over epochs `first_epoch, ...` with these monitored values."""
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate(values, start=first_epoch):
        callback.on_epoch_end(epoch, {"val_loss": value})
        if model.stop_training:
            break
    callback.on_train_end()
    return epoch


def test_patience_counts_the_epochs_trained_before_the_resume(tmp_path):
    model = _model(0)
    model.stop_training = False
    # Best at epoch 1, then two epochs without improvement: one more stops a patience-3 run.
    callback = ResumableEarlyStopping([1.0, 0.5, 0.6, 0.7], tmp_path / "best.keras", model,
                                      monitor="val_loss", patience=3)
    stopped_at = _run(callback, model, [0.8, 0.9, 0.95], first_epoch=4)
    assert stopped_at == 4
    assert callback.best == 0.5 and callback.best_epoch == 1


def test_the_best_epoch_before_the_resume_is_restored_from_the_best_model_file(tmp_path):
    best = _model(1)
    best.save(tmp_path / "best.keras")
    model = _model(2)
    model.stop_training = False
    callback = ResumableEarlyStopping([0.9, 0.4], tmp_path / "best.keras", model, monitor="val_loss",
                                      patience=2, restore_best_weights=True)
    _run(callback, model, [0.6, 0.7], first_epoch=2)
    for restored, expected in zip(model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(restored, expected)


def test_an_improvement_after_the_resume_is_restored_from_memory(tmp_path):
    _model(1).save(tmp_path / "best.keras")
    model = _model(2)
    model.stop_training = False
    callback = ResumableEarlyStopping([0.9, 0.4], tmp_path / "best.keras", model, monitor="val_loss",
                                      patience=5, restore_best_weights=True)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(2, {"val_loss": 0.3})
    improved = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1.0 for w in improved])
    callback.on_epoch_end(3, {"val_loss": 0.5})
    callback.on_train_end()
    assert callback.best == 0.3
    for restored, expected in zip(model.get_weights(), improved):
        np.testing.assert_array_equal(restored, expected)


def test_a_new_run_behaves_like_keras_early_stopping(tmp_path):
    model = _model(0)
    model.stop_training = False
    callback = ResumableEarlyStopping([], tmp_path / "best.keras", model, monitor="val_loss", patience=2)
    stopped_at = _run(callback, model, [1.0, 0.8, 0.9, 0.85, 0.7], first_epoch=0)
    assert stopped_at == 3


def _step_hooks(callbacks):
    from keras.src.utils import is_default

    return [(type(callback).__name__, hook) for callback in callbacks
            for hook in ("on_train_batch_begin", "on_train_batch_end") if not is_default(getattr(callback, hook))]


def test_the_run_callbacks_do_no_work_after_each_training_step(tmp_path):
    model = _model(0)
    assert _step_hooks(make_callbacks(RunPaths(tmp_path), model, monitor="val_loss", early_stopping_patience=3)) == []
    # A step-wise backup counts the steps.
    stepwise = make_callbacks(RunPaths(tmp_path), model, monitor="val_loss", early_stopping_patience=3,
                              backup_every_steps=10)
    assert _step_hooks(stepwise) == [("EpochAwareBackupAndRestore", "on_train_batch_end")]


def test_epoch_tensorboard_writes_the_epoch_logs(tmp_path):
    pytest.importorskip("tensorboard")
    model = _model(0)
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((8, 3), "float32"), np.ones((8, 2), "float32")
    model.fit(x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[EpochTensorBoard(tmp_path / "tb")])
    assert list((tmp_path / "tb" / "train").glob("events.out.tfevents.*"))
    assert list((tmp_path / "tb" / "validation").glob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="update_freq"):
        EpochTensorBoard(tmp_path / "tb", update_freq="batch")


def test_await_decoding_waits_once_and_raises_the_decoding_error():
    import tensorflow as tf

    from mmkeras.data.pipeline import DecodeAhead

    AwaitDecoding(None).on_epoch_begin(0)  # nothing decoded ahead: nothing to wait for
    good = AwaitDecoding(DecodeAhead(tf.data.Dataset.range(5).cache(), "numbers"))
    good.on_epoch_begin(0)
    assert good.decoding is None  # done, and not waited for again
    bad = AwaitDecoding(DecodeAhead(tf.data.Dataset.from_tensor_slices(["x"]).map(tf.strings.to_number).cache(), "bad"))
    with pytest.raises(tf.errors.InvalidArgumentError):
        bad.on_epoch_begin(0)


def test_saves_build_no_throwaway_layers_once_the_keras_save_cache_is_filled(tmp_path, monkeypatch):
    from keras.src.layers.layer import Layer

    model = _model(0)
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)  # optimizer slots to save too
    callback = EpochAwareBackupAndRestore(tmp_path / "backup")
    callback.set_model(model)
    fill_keras_save_cache()
    built = []
    original_init = Layer.__init__

    def counted_init(self, *args, **kwargs):
        built.append(type(self).__name__)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(Layer, "__init__", counted_init)
    save_model(model, tmp_path / "best.keras")  # fills the cache itself too
    callback.on_epoch_end(0)  # the backup's save
    monkeypatch.undo()
    assert built == [], f"a save built throwaway layers: {built}"
    reloaded = keras.saving.load_model(tmp_path / "best.keras")
    for value, saved in zip(model.get_weights(), reloaded.get_weights()):
        np.testing.assert_array_equal(value, saved)
    assert any((tmp_path / "backup").iterdir())


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_schedule_is_due_once_its_seconds_have_passed_and_answers_alike_within_an_epoch():
    clock = FakeClock()
    schedule = BackupSchedule(30.0, clock=clock)
    schedule.start()
    clock.now = 10.0
    assert not schedule.due(0)
    clock.now = 31.0
    assert not schedule.due(0)  # decided at the epoch's first question: the backup follows the best model
    assert schedule.due(1)
    schedule.wrote()
    clock.now = 50.0
    assert not schedule.due(2)
    clock.now = 61.0
    assert schedule.due(3)
    assert all(BackupSchedule(0.0, clock=clock).due(epoch) for epoch in range(3))


def test_an_improvement_between_writes_is_written_at_the_next_due_epoch_end_with_its_own_weights(tmp_path):
    clock = FakeClock()
    schedule = BackupSchedule(30.0, clock=clock)
    model = _model(0)
    callback = BestModelCheckpoint(model, tmp_path / "best.keras", schedule=schedule)
    callback.set_model(model)
    schedule.start()
    clock.now = 5.0
    callback.on_epoch_end(0, {"val_loss": 0.5})  # the best, not due: kept in memory
    assert not (tmp_path / "best.keras").exists() and callback.best_epoch == 0
    best_weights = model.get_weights()
    model.set_weights(_model(1).get_weights())  # training goes on
    later_weights = model.get_weights()
    clock.now = 40.0
    callback.on_epoch_end(1, {"val_loss": 0.7})  # worse, but due: the epoch-0 weights are written
    saved = keras.saving.load_model(tmp_path / "best.keras")
    for value, expected in zip(saved.get_weights(), best_weights):
        np.testing.assert_array_equal(value, expected)
    for value, expected in zip(model.get_weights(), later_weights):  # the model kept its own
        np.testing.assert_array_equal(value, expected)


def test_a_pending_best_model_is_written_when_training_ends(tmp_path):
    schedule = BackupSchedule(3600.0)
    model = _model(0)
    callback = BestModelCheckpoint(model, tmp_path / "best.keras", schedule=schedule)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(0, {"val_loss": 0.9})
    callback.on_epoch_end(1, {"val_loss": 0.4})
    best_weights = model.get_weights()
    model.set_weights(_model(1).get_weights())
    callback.on_epoch_end(2, {"val_loss": 0.6})
    assert not (tmp_path / "best.keras").exists()
    callback.on_train_end()
    saved = keras.saving.load_model(tmp_path / "best.keras")
    for value, expected in zip(saved.get_weights(), best_weights):
        np.testing.assert_array_equal(value, expected)


def test_a_scheduled_backup_skips_epoch_ends_that_are_not_due(tmp_path):
    clock = FakeClock()
    schedule = BackupSchedule(30.0, clock=clock)
    model = _model(0)
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    callback = EpochAwareBackupAndRestore(tmp_path / "backup", schedule=schedule)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(0)
    assert not (tmp_path / "backup").exists()
    clock.now = 31.0
    callback.on_epoch_end(1)
    metadata = (tmp_path / "backup" / "training_metadata.json").read_text()
    assert '"epoch": 2' in metadata
    with pytest.raises(ValueError, match="save_freq"):
        EpochAwareBackupAndRestore(tmp_path / "other", save_freq=10, schedule=schedule)


@pytest.mark.slow
def test_writing_every_so_many_seconds_trains_the_same_model_and_writes_the_same_best_model(tiny_spec, tmp_path,
                                                                                          tiny_model):
    import mmkeras

    seen = []

    class WatchBackups(keras.callbacks.Callback):  # runs after the run's own callbacks
        def __init__(self, paths):
            super().__init__()
            self.paths = paths

        def on_epoch_end(self, epoch, logs=None):
            seen.append((self.paths.backup.exists(), self.paths.best_model.exists()))

    results = {}
    for seconds in (0, 3600):
        paths = RunPaths(tmp_path / f"every-{seconds}")
        results[seconds] = mmkeras.train(tiny_spec, epochs=3, batch_size=16, output_dir=paths.run_dir, verbose=0,
                                         seed=0, backup_every_seconds=seconds, calibrate=False,
                                         callbacks=[WatchBackups(paths)], **tiny_model())
    assert seen[:3] == [(True, True)] * 3  # every epoch end wrote both
    assert seen[3:] == [(False, False)] * 3  # none before the end of training
    for seconds in (0, 3600):
        assert results[seconds].best_model_path.is_file() and not results[seconds].run_dir.joinpath("backup").exists()
    pairs = [(results[0].model, results[3600].model),
             (keras.saving.load_model(results[0].best_model_path), keras.saving.load_model(results[3600].best_model_path))]
    for first, second in pairs:
        for value, expected in zip(first.get_weights(), second.get_weights()):
            np.testing.assert_array_equal(value, expected)
    assert results[0].history == results[3600].history


@pytest.mark.slow
def test_a_run_killed_before_its_first_backup_starts_over_with_a_clean_history(tiny_spec, tmp_path, tiny_model):
    import mmkeras

    class Interrupted(RuntimeError):
        pass

    class StopAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Interrupted

    paths = RunPaths(tmp_path / "run")
    options = dict(batch_size=16, output_dir=paths.run_dir, verbose=0, seed=0, backup_every_seconds=3600,
                   **tiny_model())
    with pytest.raises(Interrupted):
        mmkeras.train(tiny_spec, epochs=3, callbacks=[StopAfterSecondEpoch()], **options)
    assert not paths.can_resume() and len(read_history(paths.history_csv)["epoch"]) == 2
    result = mmkeras.train(tiny_spec, epochs=1, **options)
    assert result.initial_epoch == 0 and result.history["epoch"] == [0]
    with open(paths.history_csv, newline="") as stream:
        assert [row["epoch"] for row in csv.DictReader(stream)] == ["0"]  # not the killed run's rows


def test_rare_token_dropout_warms_up_over_a_share_of_the_epochs_and_ends_at_full_strength():
    from mmkeras.branches.token_dropout import TokenDropout

    inputs = keras.Input((4,), dtype="int64")
    dropout = TokenDropout(rare=1.0, counts=[0, 0, 1, 2, 5, 9])
    embedded = keras.layers.Embedding(6, 2)(dropout(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(embedded)))
    model.compile("sgd", "mse")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(float(dropout.strength.numpy()))

    ids = np.random.default_rng(0).integers(2, 6, (16, 4))
    warmup = RareTokenDropoutWarmup(0.5)
    history = model.fit(ids, np.zeros(16), epochs=4, batch_size=8, verbose=0, callbacks=[warmup, Record()])
    assert seen == [0.0, 0.5, 1.0, 1.0]
    assert history.history["rare_token_strength"] == [0.0, 0.5, 1.0, 1.0]
    assert float(dropout.strength.numpy()) == 1.0
    assert RareTokenDropoutWarmup(0.0).strength_at(0, 10) == 1.0  # full strength from the start
    with pytest.raises(ValueError, match="warmup"):
        RareTokenDropoutWarmup(1.5)

