"""A model's graph as DOT source, drawn from its anatomy, for `st.graphviz_chart` to render in the
browser (no graphviz binary on the server; the `graphviz` package only writes the DOT text).

Three depths: one node per stage; one per block (the default); or every operation the tracer
saw. Skip connections are edges that bypass what they skip (dashed). To stay readable for the
deepest models (DenseNet-201's 98 dense layers, ViT-H/14's 32 encoder layers), a stage with more
blocks than a depth shows keeps its first blocks and its last, and folds the ones between into one
node that says how many there are; parameter-free layers that keep the shape (activations,
dropout) are written into the node before them instead of getting a node of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.inside.anatomy import Anatomy, Block, Stage
from core.inside.dataflow import Op

DEPTHS = ("stages", "blocks", "layers")
DEFAULT_DEPTH = "blocks"
# Blocks kept before the fold, per depth (the last block is always kept too).
KEEP_FIRST = {"blocks": 3, "layers": 1}

SKIP_COLOUR = "#1f77b4"
FILL, SKIP_FILL, FOLD_FILL = "#f3f4f6", "#dbeafe", "#ffffff"


@dataclass(frozen=True)
class Fold:
    """Blocks drawn as one node."""

    blocks: tuple[Block, ...]

    @property
    def skips(self) -> int:
        return sum(block.skips for block in self.blocks)


def model_dot(anatomy: Anatomy, depth: str = DEFAULT_DEPTH, stage: int | None = None) -> str:
    """The DOT source of `anatomy`'s graph at `depth`: "stages" or "blocks" for the whole model,
    "layers" for the blocks of one stage (`stage`, an index; the head is len(stages); default:
    `default_stage`)."""
    from graphviz import Digraph  # writes DOT text only; nothing here needs the graphviz binary

    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS}, not {depth!r}")
    graph = Digraph(
        anatomy.model,
        graph_attr={"rankdir": "TB", "nodesep": "0.25", "ranksep": "0.3", "fontname": "Helvetica", "fontsize": "11"},
        node_attr={"shape": "box", "style": "rounded,filled", "fillcolor": FILL, "fontname": "Helvetica",
                   "fontsize": "10", "color": "#9ca3af"},
        edge_attr={"color": "#6b7280", "arrowsize": "0.6"},
    )  # fmt: skip
    if depth == "layers":
        index = default_stage(anatomy) if stage is None else stage
        if not 0 <= index <= len(anatomy.stages):
            raise ValueError(f"{anatomy.model} has stages 0 to {len(anatomy.stages) - 1} and the head, not {stage}")
        _layers(graph, anatomy, index)
        return graph.source
    size = anatomy.input_size
    graph.node("input", f"image\\n3 x {size} x {size}", shape="oval", fillcolor="#ffffff")
    last = _stages(graph, anatomy) if depth == "stages" else _blocks(graph, anatomy)
    graph.node("output", f"logits\\n{_shape(anatomy.head.output_shape)}", shape="oval", fillcolor="#ffffff")
    graph.edge(last, "output")
    return graph.source


def node_count(dot: str) -> int:
    """Nodes in DOT source written by model_dot (one per line that declares one)."""
    return sum(1 for line in dot.splitlines() if "[label=" in line and "->" not in line)


# --- text -------------------------------------------------------------------------------------------


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape))


def _amounts(params: int, gflops: float) -> str:
    count = f"{params / 1e6:.2f} M" if params >= 100_000 else f"{params / 1e3:.1f} k" if params >= 1000 else str(params)
    return f"{count} params · {gflops:.2f} GFLOPS" if gflops >= 0.1 else f"{count} params · {gflops:.3f} GFLOPS"


def _skip_text(count: int, kind: str | None) -> str:
    word = "concat" if kind == "concat" else "+x"
    return word if count == 1 else f"{word} ×{count}"


def _short(text: str, limit: int = 44) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tail(path: str) -> str:
    return path.rpartition(".")[2]


# --- stages ---------------------------------------------------------------------------------------------


def _stages(graph, anatomy: Anatomy) -> str:
    previous = "input"
    for stage in (*anatomy.stages, anatomy.head):
        node = f"stage{stage.index}"
        lines = [stage.name if stage is anatomy.head else f"{stage.index + 1}. {stage.name}", _short(stage.kind)]
        lines += [_shape(stage.output_shape), _amounts(stage.params, stage.gflops)]
        if stage.skips:
            lines.append(f"{stage.skips} skip connection{'s' if stage.skips > 1 else ''}")
        graph.node(node, "\\n".join(lines), fillcolor=SKIP_FILL if stage.skips else FILL)
        graph.edge(previous, node)
        previous = node
    return previous


# --- blocks ---------------------------------------------------------------------------------------------


def _folded(blocks: tuple[Block, ...], keep_first: int) -> list[Block | Fold]:
    if len(blocks) <= keep_first + 2:
        return list(blocks)
    return [*blocks[:keep_first], Fold(blocks[keep_first:-1]), blocks[-1]]


def _is_pointwise(block: Block) -> bool:
    return block.params == 0 and block.input_shape == block.output_shape


def _stage_label(stage: Stage, head: bool) -> str:
    title = "head" if head else f"{stage.index + 1}. {stage.name}"
    return f"{title} · {_shape(stage.output_shape)}"


def _block_lines(item: Block | Fold) -> list[str]:
    if isinstance(item, Fold):
        first, last = item.blocks[0], item.blocks[-1]
        params, gflops = sum(b.params for b in item.blocks), sum(b.gflops for b in item.blocks)
        return [f"… {len(item.blocks)} more: {_tail(first.path)} to {_tail(last.path)}", _short(_kind_of(item.blocks)),
                _amounts(params, gflops)]  # fmt: skip
    lines = [f"{_tail(item.path)}: {item.kind}", _shape(item.output_shape)]
    if item.params or item.gflops >= 0.005:
        lines.append(_amounts(item.params, item.gflops))
    return lines


def _blocks(graph, anatomy: Anatomy) -> str:
    chain: list[tuple[str, int, str | None]] = [("input", 0, None)]  # node, skips around it, kind
    for stage in (*anatomy.stages, anatomy.head):
        entries: list[tuple[Block | Fold, list[str]]] = []
        for item in _folded(stage.blocks, KEEP_FIRST["blocks"]):
            if isinstance(item, Block) and _is_pointwise(item) and entries:
                entries[-1][1][0] += f" + {item.kind}"  # e.g. "bn1: BatchNorm2d + ReLU"
            else:
                entries.append((item, _block_lines(item)))
        with graph.subgraph(name=f"cluster_{stage.index}") as cluster:
            cluster.attr(label=_stage_label(stage, stage is anatomy.head), style="rounded,dashed", color="#9ca3af",
                         labeljust="l")  # fmt: skip
            for index, (item, lines) in enumerate(entries):
                node = f"s{stage.index}b{index}"
                if isinstance(item, Fold):
                    cluster.node(node, "\\n".join(lines), fillcolor=FOLD_FILL, style="rounded,filled,dashed")
                    chain.append((node, item.skips, item.blocks[0].skip_kind))
                else:
                    cluster.node(node, "\\n".join(lines), fillcolor=SKIP_FILL if item.skips else FILL)
                    chain.append((node, item.skips, item.skip_kind))
    chain.append(("output", 0, None))
    for (before, _, _), (after, _, _) in zip(chain, chain[1:-1], strict=False):
        graph.edge(before, after)
    for position in range(1, len(chain) - 1):
        node, skips, kind = chain[position]
        if skips:
            graph.edge(chain[position - 1][0], chain[position + 1][0], label=_skip_text(skips, kind),
                       style="dashed", color=SKIP_COLOUR, fontcolor=SKIP_COLOUR, fontsize="9")  # fmt: skip
    return chain[-2][0]


def _kind_of(blocks: tuple[Block, ...]) -> str:
    kinds = list(dict.fromkeys(block.kind for block in blocks))
    return ", ".join(kinds)


# --- layers ---------------------------------------------------------------------------------------------


def default_stage(anatomy: Anatomy) -> int:
    """The stage the "layers" depth shows first: the first with a skip connection, else the second."""
    return next((stage.index for stage in anatomy.stages if stage.skips), min(1, len(anatomy.stages) - 1))


def _layers(graph, anatomy: Anatomy, stage_index: int) -> None:
    """Every traced operation in one stage's blocks (the middle ones folded), between that
    stage's input and output."""
    stages = (*anatomy.stages, anatomy.head)
    stage = stages[stage_index]
    block_of: dict[str, Block | Fold] = {}
    for item in _folded(stage.blocks, KEEP_FIRST["layers"]):
        for block in item.blocks if isinstance(item, Fold) else (item,):
            block_of[block.path] = item

    def owner(op: Op) -> Block | Fold | None:
        return next((block_of[path] for path in reversed(op.scope) if path in block_of), None)

    home: dict[str, str] = {}  # op name -> the node drawn for it
    members: dict[int, list[Op]] = {}
    order: list[Block | Fold] = []
    for op in anatomy.ops:
        owned = owner(op)
        if owned is None:
            continue
        home[op.name] = "fold" if isinstance(owned, Fold) else op.name
        if id(owned) not in members:
            order.append(owned)
        members.setdefault(id(owned), []).append(op)

    before = stages[stage_index - 1].output_shape if stage_index else (3, anatomy.input_size, anatomy.input_size)
    graph.node("input", f"{'stage input' if stage_index else 'image'}\\n{_shape(before)}", shape="oval",
               fillcolor="#ffffff")  # fmt: skip
    with graph.subgraph(name="cluster_stage") as outer:
        outer.attr(label=_stage_label(stage, stage is anatomy.head), style="rounded,dashed", color="#9ca3af")
        for item in order:
            if isinstance(item, Fold):
                lines = [f"… {len(item.blocks)} more {_short(_kind_of(item.blocks))}"]
                if item.skips:
                    lines.append(f"{item.skips} skip connections")
                outer.node("fold", "\\n".join(lines), fillcolor=FOLD_FILL, style="rounded,filled,dashed")
                continue
            with outer.subgraph(name=f"cluster_{item.path.replace('.', '_')}") as inner:
                inner.attr(label=f"{_tail(item.path)}: {item.kind}", style="rounded", color="#d1d5db")
                for op in members[id(item)]:
                    _op_node(inner, op)

    # A skip edge: the block's input reaching its add or concat, or a shortcut's own layers
    # (ResNet's downsample), i.e. an edge from outside a block to anything but its first op.
    firsts = {members[id(item)][0].name for item in order if not isinstance(item, Fold)}
    edges: set[tuple[str, str]] = set()
    drawn = [op for op in anatomy.ops if op.name in home]
    by_name = {op.name: op for op in drawn}
    for op in drawn:
        target = home[op.name]
        for name in op.inputs:
            source = home.get(name, "input")  # from before this stage
            if source == target or (source, target) in edges:
                continue
            edges.add((source, target))
            outside = source == "input" or owner(by_name[name]) is not owner(op)
            if outside and (op.kind in ("add", "concat") or op.name not in firsts):
                graph.edge(source, target, style="dashed", color=SKIP_COLOUR)
            else:
                graph.edge(source, target)
    graph.node("output", f"stage output\\n{_shape(stage.output_shape)}", shape="oval", fillcolor="#ffffff")
    if drawn:
        graph.edge(home[drawn[-1].name], "output")


def _op_node(graph, op: Op) -> None:
    if op.kind == "layer":
        graph.node(op.name, op.label)
    else:
        skip = op.kind in ("add", "concat")
        graph.node(op.name, op.label, shape="circle" if op.kind == "add" else "ellipse",
                   fillcolor=SKIP_FILL if skip else "#ffffff", fontsize="9", margin="0.02")  # fmt: skip
