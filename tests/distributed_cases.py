"""Programs the distributed tests run under ``mpiexec -n 2`` (``python tests/distributed_cases.py CASE OUT``), and
their single-process twins (``run(case, distributed=False)``). Rank 0 writes what the test compares to OUT."""
import hashlib
import sys

import numpy as np

import xpcnn
from xpcnn import optim
from xpcnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
from xpcnn.zoo import lenet


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 12, 12)), rng.integers(0, 10, n)


def _model(kind, dtype, distributed):
    if kind == "lenet":
        return lenet(image_size=12, width=4, dropout=0.0, seed=0, dtype=dtype)
    from xpcnn.distributed import SyncBatchNorm2D
    norm = SyncBatchNorm2D if distributed else BatchNorm2D
    return xpcnn.Sequential([Conv2D(1, 4, 3, padding=1, bias=False), norm(4), ReLU(), MaxPool2D(2), Flatten(),
                             Dense(4 * 6 * 6, 10)], seed=0, dtype=dtype)


def _optimizer(name, model):
    if name == "sgd":
        return optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return optim.Adam(model.parameters(), lr=0.01)


def train(kind, optimizer, dtype, distributed, batch):
    """10 steps at global batch ``batch`` (160 or 150 samples, one epoch), shuffled by seed 3."""
    model = _model(kind, dtype, distributed)
    x, y = _data(10 * batch)
    model.fit(x, y, optimizer=_optimizer(optimizer, model), batch_size=batch, epochs=1, seed=3, verbose=0,
              distributed=distributed)
    return {key: np.asarray(value) for key, value in model.state_dict().items()}


def run(case: str, distributed: bool):
    kind, optimizer, dtype, batch = case.split("-")
    return train(kind, optimizer, dtype, distributed, int(batch))


def broadcast(out):
    """Every rank builds LeNet from its own seed; after broadcast_parameters all hold rank 0's weights."""
    from xpcnn import distributed as D
    model = lenet(image_size=12, width=4, seed=D.rank())
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _data(8, seed=D.rank())                    # a step on each rank's own data: different momentum buffers
    model.fit(x, y, optimizer=opt, batch_size=8, verbose=0)
    D.broadcast_parameters(model, optimizer=opt)
    arrays = [*model.state_dict().values(), *opt.state_dict()["state"].values()]
    mine = np.frombuffer(hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).digest(),
                         dtype=np.uint8).copy()
    everyone = np.empty((D.size(), mine.size), dtype=np.uint8)
    D.communicator().Allgather(mine, everyone)
    if D.is_main():
        np.savez(out, **model.state_dict(), same=np.array((everyone == everyone[0]).all()),
                 momentum_entries=np.array(len(opt.state_dict()["state"])))


def mismatch(out):
    """Rank 1 builds a wider first layer: broadcast_parameters must fail on both ranks, not hang."""
    from xpcnn import distributed as D
    model = lenet(image_size=12, width=4 + D.rank(), seed=0)
    D.broadcast_parameters(model)


def fault(out, kind="labels"):
    """Rank 1's labels are out of range, or its images hold a NaN: fit fails there, and every rank must stop."""
    from xpcnn import distributed as D
    model = lenet(image_size=12, width=4, seed=0)
    x, y = _data(32)
    if D.rank() == 1 and kind == "labels":
        y = y + 10
    if D.rank() == 1 and kind == "nan":
        x[5, 0, 3, 3] = np.nan
    model.fit(x, y, optimizer="sgd", batch_size=8, verbose=0, distributed=True)


def checkpoint(out):
    """Train 2 epochs with a checkpoint and a metrics file (rank 0 writes them), resume to 3 on every rank."""
    from xpcnn import distributed as D
    from xpcnn.callbacks import MetricsLogger, ModelCheckpoint
    folder = out.rsplit("/", 1)[0]
    x, y = _data(64)
    model = lenet(image_size=12, width=4, seed=0, dropout=0.0)
    model.fit(x, y, optimizer=optim.Adam(model.parameters(), lr=0.01), batch_size=16, epochs=2, seed=1,
              verbose=0, distributed=True,
              callbacks=[ModelCheckpoint(f"{folder}/ckpt.npz"), MetricsLogger(f"{folder}/metrics.csv")])
    D.communicator().Barrier()
    resumed = lenet(image_size=12, width=4, seed=5, dropout=0.0)
    resumed.fit(x, y, optimizer=optim.Adam(resumed.parameters(), lr=0.01), batch_size=16, epochs=3, seed=1,
                verbose=0, distributed=True, resume=f"{folder}/ckpt.npz")
    straight = lenet(image_size=12, width=4, seed=0, dropout=0.0)
    straight.fit(x, y, optimizer=optim.Adam(straight.parameters(), lr=0.01), batch_size=16, epochs=3, seed=1,
                 verbose=0, distributed=True)
    if D.is_main():
        np.savez(out, **{f"resumed.{k}": v for k, v in resumed.state_dict().items()},
                 **{f"straight.{k}": v for k, v in straight.state_dict().items()})


def buckets(distributed: bool):
    """Small buckets (several Allreduce calls a step), gradient clipping and a validation split: the same
    weights as one process with the plain optimizer."""
    model = lenet(image_size=12, width=4, dropout=0.0, seed=0, dtype="float64")
    x, y = _data(200)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if distributed:
        from xpcnn.distributed import DistributedOptimizer
        wrapped = DistributedOptimizer(opt, bucket_bytes=4096)
        assert len(wrapped.buckets()) > 3
        opt = wrapped
    history = model.fit(x, y, optimizer=opt, batch_size=16, epochs=1, seed=3, verbose=0, clip_grad_norm=0.5,
                        validation_split=0.2)
    return {**{key: np.asarray(value) for key, value in model.state_dict().items()},
            "val_loss": np.array(history["val_loss"])}


def disagree(out):
    """Rank 1 differs in epochs, batch size and data length (one fit each): every rank gets the same one-line
    error, none hangs; then an EarlyStopping on rank 1 alone stops both ranks after epoch 2 of 4."""
    from xpcnn import distributed as D
    from xpcnn.callbacks import EarlyStopping
    x, y = _data(32)
    one = D.rank() == 1
    messages = []
    for epochs, batch_size, n in [(1 + one, 8, 32), (1, 8 + one, 32), (1, 8, 32 - 4 * one)]:
        try:
            lenet(image_size=12, width=4, seed=0).fit(x[:n], y[:n], optimizer="sgd", epochs=epochs,
                                                      batch_size=batch_size, verbose=0, distributed=True)
            messages.append("no error")
        except D.Disagreement as exc:
            messages.append(str(exc))
    stop = [EarlyStopping(monitor="loss", patience=0, min_delta=1e9, restore_best_weights=False)] if one else []
    history = lenet(image_size=12, width=4, seed=0).fit(x, y, optimizer="sgd", epochs=4, batch_size=8, verbose=0,
                                                        distributed=True, callbacks=stop)
    everyone = D.communicator().gather([messages, len(history.epochs)], root=0)
    if D.is_main():
        np.savez(out, messages=np.array([m for row in everyone for m in row[0]]),
                 epochs=np.array([row[1] for row in everyone]))


def syncbn_step(out):
    """One hand-written step of a SyncBatchNorm2D model on torch tensors, global batch 15 (8 + 7): the
    Allreduce calls it makes and the device-to-host reads, with the global batch said and without."""
    from xpcnn import distributed as D
    from xpcnn.testing import Transfers
    x, y = _data(15)
    lo, hi = D.local_slice(0, 15)
    results = {}
    for said in (True, False):
        model = _model("syncbn", "float64", True).to("torch")
        opt = D.DistributedOptimizer(optim.SGD(model.parameters(), lr=0.1))
        xb, yb = model.backend.asarray(x[lo:hi]), model.backend.asarray(y[lo:hi])
        D.set_global_batch(15 if said else None)
        calls = opt.transport.calls
        with Transfers() as transfers:
            logits = model(xb)
            _, dlogits = xpcnn.functional.softmax_cross_entropy(logits, yb, check_labels=False)
            model.backward(dlogits * ((hi - lo) * 2 / 15), need_dx=False)
            opt.step()
        results[said] = (opt.transport.calls - calls, transfers.reads,
                         {k: np.asarray(v) for k, v in model.state_dict().items()})
    D.set_global_batch(None)
    if D.is_main():
        np.savez(out, calls=np.array([results[True][0], results[False][0]]),
                 reads=np.array([results[True][1], results[False][1]]),
                 **{f"said.{k}": v for k, v in results[True][2].items()},
                 **{f"unsaid.{k}": v for k, v in results[False][2].items()})


SPECIAL = {"broadcast": broadcast, "mismatch": mismatch, "fault": fault, "checkpoint": checkpoint,
           "nan": lambda out: fault(out, "nan"), "disagree": disagree, "syncbn-step": syncbn_step}


if __name__ == "__main__":
    case, out = sys.argv[1], sys.argv[2]
    if case in SPECIAL:
        SPECIAL[case](out)
    elif case == "buckets":
        from xpcnn import distributed as D
        state = buckets(distributed=True)
        if D.is_main():
            np.savez(out, **state)
    else:
        from xpcnn import distributed as D
        state = run(case, distributed=True)
        if D.is_main():
            np.savez(out, **state)
