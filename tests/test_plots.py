"""The training-curve figure: its title names the hidden width and the augmentation,
and its epoch ticks are whole numbers, also for a run of one epoch."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib", reason="matplotlib is not installed (the plot extra)")

import simplenn
from simplenn.cli import train as train_cli
from simplenn.cli.plots import training_curves_figure, training_curves_title


def _history(epochs: int, augment: str, train_split, test_split):
    net = simplenn.TwoLayerNet(784, 12, 10, backend="numpy", seed=0)
    history = simplenn.fit(
        net,
        train_split,
        test_split,
        epochs=epochs,
        batch_size=64,
        augment=augment,
        interruptible=False,
    )
    return net, history


@pytest.fixture(scope="module")
def splits():
    train, test = simplenn.load_mnist()
    return train[:256], test[:128]


@pytest.mark.parametrize(
    ("augment", "words"), [("none", "no augmentation"), ("elastic", "elastic augmentation")]
)
def test_the_title_names_the_hidden_width_and_the_augmentation(splits, augment, words):
    net, history = _history(1, augment, *splits)
    title = training_curves_title(history, net.n_hidden)
    assert "hidden 12," in title and words in title, title
    assert title.startswith("numpy backend, hidden 12, batch 64, ")
    assert training_curves_figure(history, net.n_hidden).get_suptitle() == title


@pytest.mark.parametrize("epochs", [1, 2, 3])
def test_epoch_ticks_are_whole_numbers(splits, epochs):
    _, history = _history(epochs, "none", *splits)
    fig = training_curves_figure(history, 12)
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = sorted(ax.get_xlim())
        shown = [t for t in ax.get_xticks() if low <= t <= high]
        assert shown, ax.get_xticks()
        assert all(float(t).is_integer() for t in shown), (epochs, shown)
        assert set(range(1, epochs + 1)) >= {int(t) for t in shown if t >= 1}


def test_train_plot_titles_the_network_it_trained(mnist_subset_dir, tmp_path, monkeypatch):
    from simplenn.cli import plots

    titles = []

    def capture(history, path, n_hidden=None):
        titles.append(training_curves_title(history, n_hidden))
        return path

    monkeypatch.setattr(plots, "plot_training_curves", capture)
    assert (
        train_cli.main(
            [
                "--backend",
                "numpy",
                "--hidden",
                "24",
                "--epochs",
                "1",
                "--data-dir",
                str(mnist_subset_dir(512, 128)),
                "--quiet",
                "--plot",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert len(titles) == 1 and "hidden 24," in titles[0], titles
