"""The demo platform's catalog: a fixed category tree plus seeded brands, merchants and items.

The tree is written by hand (names a Chinese shopper recognises, a median price per leaf, which
leaves are consumables and how often they are re-bought) because that is what gives the data its
shape; brands, merchants and items are drawn from it with one seeded generator, so a seed always
gives the same catalog. Sampling helpers pick leaves and items with NumPy only (one
``searchsorted`` over concatenated CDFs), so the event generator never loops per event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: One day in microseconds (timestamps are int64 microseconds since the epoch, UTC).
DAY_US = 86_400_000_000
#: Items of a leaf are split into this many price bands; members prefer some bands.
PRICE_BANDS = 5
#: Share of merchants whose orders are refunded and complained about far more often.
BAD_MERCHANT_SHARE = 0.04
MERCHANTS_PER_TOP = 15
#: Share of items launched inside the generated period (the "new arrivals").
NEW_ARRIVAL_SHARE = 0.12
#: Every leaf gets at least this many items so every (leaf, price band) group is non-empty.
MIN_ITEMS_PER_LEAF = 2 * PRICE_BANDS
#: How strongly popularity is concentrated on the top items of a group (Zipf exponent).
ZIPF_EXPONENT = 1.1


@dataclass(frozen=True)
class Leaf:
    """A leaf category: name, median item price in CNY, traffic weight, re-buy cycle (days).

    ``rebuy_days`` is set exactly for consumables (milk powder, diapers, groceries): members
    who adopt one as a staple re-buy it at about that interval.
    """

    name: str
    median_cny: float
    weight: float = 1.0
    rebuy_days: int | None = None

    @property
    def consumable(self) -> bool:
        """Whether members re-buy it on a cycle."""
        return self.rebuy_days is not None


@dataclass(frozen=True)
class Top:
    """A top-level category and its leaves; ``sigma`` is the log-price spread of its items."""

    name: str
    leaves: tuple[Leaf, ...]
    sigma: float = 0.55


L = Leaf
#: The category tree: 16 top-level categories, 100 leaves.
TAXONOMY: tuple[Top, ...] = (
    Top(
        "母婴",
        (
            L("奶粉", 320, 3.0, 25),
            L("纸尿裤", 120, 3.0, 18),
            L("婴儿辅食", 45, 1.5, 14),
            L("童装", 90, 1.5),
            L("玩具", 120, 1.5),
            L("婴儿车", 1200, 0.5),
            L("孕妇装", 150, 0.6),
            L("奶瓶", 80, 0.8),
        ),
    ),
    Top(
        "数码",
        (
            L("手机", 3500, 3.0),
            L("笔记本电脑", 6000, 1.5),
            L("平板电脑", 3000, 1.0),
            L("耳机", 400, 2.0),
            L("智能手表", 1500, 1.0),
            L("相机", 5000, 0.5),
            L("充电器", 60, 1.5),
            L("键盘鼠标", 200, 1.0),
        ),
        0.6,
    ),
    Top(
        "美妆",
        (
            L("面霜", 280, 2.0),
            L("口红", 220, 2.0),
            L("精华", 450, 1.5),
            L("面膜", 90, 1.5, 30),
            L("香水", 600, 0.8),
            L("粉底", 260, 1.0),
            L("卸妆", 110, 0.8, 45),
        ),
    ),
    Top(
        "食品",
        (
            L("零食", 40, 3.0, 14),
            L("坚果", 70, 1.5, 21),
            L("饮料", 50, 1.5, 10),
            L("咖啡", 90, 1.0, 30),
            L("茶叶", 200, 0.8),
            L("粮油", 80, 1.5, 30),
            L("方便食品", 35, 1.0, 12),
        ),
        0.45,
    ),
    Top(
        "服饰",
        (
            L("女装", 220, 3.0),
            L("男装", 250, 2.0),
            L("女鞋", 300, 1.5),
            L("男鞋", 350, 1.2),
            L("内衣", 90, 1.0),
            L("箱包", 300, 1.0),
            L("配饰", 80, 0.8),
        ),
        0.6,
    ),
    Top(
        "家电",
        (
            L("冰箱", 3500, 0.8),
            L("洗衣机", 2500, 0.8),
            L("空调", 3500, 0.8),
            L("电视", 3800, 0.8),
            L("厨房小电", 350, 2.0),
            L("吸尘器", 1500, 1.0),
            L("个护电器", 300, 1.5),
        ),
    ),
    Top(
        "生鲜",
        (
            L("水果", 60, 3.0, 7),
            L("蔬菜", 30, 2.0, 5),
            L("肉禽", 80, 1.5, 7),
            L("海鲜", 150, 1.0, 10),
            L("乳品", 50, 2.0, 7),
            L("蛋类", 30, 1.0, 10),
        ),
        0.4,
    ),
    Top(
        "家居",
        (
            L("床上用品", 300, 1.5),
            L("家具", 1500, 1.0),
            L("收纳", 60, 1.5),
            L("灯具", 250, 0.8),
            L("厨具", 150, 1.2),
            L("家纺", 120, 1.0),
        ),
    ),
    Top(
        "运动户外",
        (
            L("运动鞋", 500, 2.0),
            L("运动服", 250, 1.5),
            L("健身器材", 800, 0.8),
            L("户外装备", 400, 1.0),
            L("骑行", 1200, 0.5),
            L("球类", 150, 0.7),
        ),
    ),
    Top(
        "图书",
        (
            L("童书", 40, 1.5),
            L("小说", 45, 1.5),
            L("教辅", 35, 1.2),
            L("经管", 55, 0.8),
            L("文具", 25, 1.0),
        ),
        0.4,
    ),
    Top(
        "宠物",
        (
            L("猫粮", 150, 2.0, 30),
            L("狗粮", 180, 1.5, 30),
            L("猫砂", 60, 1.5, 20),
            L("宠物零食", 50, 1.0, 15),
            L("宠物用品", 100, 1.0),
        ),
        0.45,
    ),
    Top(
        "个护清洁",
        (
            L("洗发水", 70, 1.5, 45),
            L("沐浴露", 55, 1.2, 45),
            L("牙膏", 30, 1.0, 40),
            L("纸巾", 45, 2.0, 20),
            L("洗衣液", 50, 1.5, 30),
            L("卫生巾", 40, 1.0, 28),
        ),
        0.4,
    ),
    Top(
        "珠宝奢品",
        (
            L("腕表", 15000, 1.0),
            L("奢侈品包", 12000, 1.5),
            L("黄金首饰", 5000, 1.2),
            L("钻石", 9000, 0.6),
            L("珍珠", 3000, 0.5),
            L("奢品配饰", 3000, 0.8),
        ),
        0.6,
    ),
    Top(
        "汽车用品",
        (
            L("车载电子", 300, 1.0),
            L("机油", 250, 1.0),
            L("座垫脚垫", 300, 0.8),
            L("洗车用品", 60, 1.0),
            L("轮胎", 600, 0.6),
        ),
    ),
    Top(
        "医药保健",
        (
            L("维生素", 150, 1.5, 30),
            L("保健品", 300, 1.2, 45),
            L("隐形眼镜", 120, 1.0, 30),
            L("医疗器械", 400, 0.8),
            L("中药滋补", 300, 0.8),
        ),
    ),
    Top(
        "酒水",
        (
            L("白酒", 800, 1.2),
            L("葡萄酒", 300, 1.0),
            L("啤酒", 80, 1.0, 14),
            L("洋酒", 500, 0.6),
        ),
        0.7,
    ),
)
del L

TOP_NAMES: tuple[str, ...] = tuple(t.name for t in TAXONOMY)

_BRAND_HEADS = "安贝嘉金优美乐华星云天森蓝鸿悦瑞雅禾朗思欧德维康博凯诺琪初素"
_BRAND_TAILS = "佳源米诺格品尚宝康迪可派达拓兰丽泉家果途坊屋酷仕臻颜"
_TITLE_SUFFIXES = (
    "经典款",
    "新款",
    "旗舰版",
    "升级版",
    "家庭装",
    "限定版",
    "轻奢款",
    "基础款",
    "大容量",
    "便携装",
    "礼盒装",
    "专业版",
)
_SHOP_CITIES = ("杭州", "广州", "深圳", "上海", "义乌", "苏州", "成都", "北京", "厦门", "武汉")
_SHOP_WORDS = ("优品", "好物", "精选", "百货", "优选", "生活馆", "家居馆", "数码港", "小铺", "汇")
_SHOP_KINDS = ("专营店", "专卖店", "企业店", "小店", "工厂店")
_QUERY_TEMPLATES = ("{leaf}", "{leaf}推荐", "{leaf} 便宜", "{leaf} 正品", "{leaf} 新款")


@dataclass(frozen=True)
class Catalog:
    """Every catalog table as NumPy columns, plus the Arrow string dictionaries events take from.

    Index conventions: tops, leaves, brands, merchants and items are numbered from 0 in table
    order; ``leaf_start[t]:leaf_start[t + 1]`` are the leaves of top ``t``; an item's
    ``launch_day`` is relative to the first generated day (negative: launched before it).
    """

    top_ids: list[str]
    leaf_ids: list[str]
    leaf_top: IntArray
    leaf_start: IntArray
    leaf_cdf: FloatArray
    leaf_rebuy: IntArray
    brand_names: list[str]
    brand_top: IntArray
    merchant_ids: list[str]
    merchant_names: list[str]
    merchant_top: IntArray
    merchant_bad: BoolArray
    merchant_refund: FloatArray
    merchant_complaint: FloatArray
    item_leaf: IntArray
    item_brand: IntArray
    item_merchant: IntArray
    item_price: IntArray
    item_launch_day: IntArray
    item_launched_us: IntArray
    item_fallback: IntArray
    group_items: IntArray
    group_cdf: FloatArray
    group_last: IntArray
    item_id_array: pa.Array
    item_title_array: pa.Array
    query_array: pa.Array
    query_start: IntArray

    @property
    def n_items(self) -> int:
        """How many items the catalog has."""
        return len(self.item_leaf)

    @property
    def item_rebuy(self) -> IntArray:
        """Each item's re-buy cycle in days (0 for durables)."""
        return self.leaf_rebuy[self.item_leaf]

    def sample_leaf(self, rng: np.random.Generator, top: IntArray) -> IntArray:
        """One leaf of each given top category, weighted by leaf traffic."""
        pos = np.searchsorted(self.leaf_cdf, top + rng.random(len(top)), side="right")
        return np.minimum(pos, self.leaf_start[top + 1] - 1).astype(np.int64)

    def sample_item(self, rng: np.random.Generator, leaf: IntArray, band: IntArray) -> IntArray:
        """One item of each (leaf, price band), Zipf-weighted so a few items get most traffic."""
        group = leaf * PRICE_BANDS + band
        pos = np.searchsorted(self.group_cdf, group + rng.random(len(group)), side="right")
        return np.asarray(self.group_items[np.minimum(pos, self.group_last[group])], np.int64)

    def available(self, item: IntArray, day: IntArray) -> IntArray:
        """The items, with any not yet launched on ``day`` replaced by an established one."""
        return np.where(self.item_launch_day[item] >= day, self.item_fallback[item], item)

    def tables(self) -> dict[str, pa.Table]:
        """The ``categories``, ``merchants`` and ``items`` tables as written to Parquet."""
        return {
            "categories": self._categories_table(),
            "merchants": self._merchants_table(),
            "items": self._items_table(),
        }

    def _categories_table(self) -> pa.Table:
        prices = self.item_price
        top_of_item = self.leaf_top[self.item_leaf]
        rows: list[tuple[str, str | None, str, str, int, bool, IntArray]] = []
        for t, top in enumerate(TAXONOMY):
            consumable = sum(leaf.consumable for leaf in top.leaves) * 2 > len(top.leaves)
            rows.append(
                (self.top_ids[t], None, top.name, top.name, 1, consumable, prices[top_of_item == t])
            )
        for j, leaf_id in enumerate(self.leaf_ids):
            t = int(self.leaf_top[j])
            leaf = TAXONOMY[t].leaves[j - int(self.leaf_start[t])]
            path = f"{TAXONOMY[t].name} / {leaf.name}"
            in_leaf = prices[self.item_leaf == j]
            rows.append((leaf_id, self.top_ids[t], leaf.name, path, 2, leaf.consumable, in_leaf))
        bands = [np.percentile(r[6], [25, 50, 75]).round().astype(np.int64) for r in rows]
        return pa.table(
            {
                "category_id": [r[0] for r in rows],
                "parent_id": pa.array([r[1] for r in rows], pa.string()),
                "name": [r[2] for r in rows],
                "path": [r[3] for r in rows],
                "level": pa.array([r[4] for r in rows], pa.int32()),
                "consumable": [r[5] for r in rows],
                "price_p25": pa.array([int(b[0]) for b in bands], pa.int64()),
                "price_p50": pa.array([int(b[1]) for b in bands], pa.int64()),
                "price_p75": pa.array([int(b[2]) for b in bands], pa.int64()),
            }
        )

    def _merchants_table(self) -> pa.Table:
        return pa.table(
            {
                "merchant_id": self.merchant_ids,
                "name": self.merchant_names,
                "category_id": pa.array(self.top_ids).take(pa.array(self.merchant_top)),
                "quality": np.where(self.merchant_bad, "bad", "good").tolist(),
                "refund_rate": self.merchant_refund.round(4),
                "complaint_rate": self.merchant_complaint.round(4),
            }
        )

    def _items_table(self) -> pa.Table:
        rebuy = self.item_rebuy
        return pa.table(
            {
                "item_id": self.item_id_array,
                "title": self.item_title_array,
                "category_id": pa.array(self.leaf_ids).take(pa.array(self.item_leaf)),
                "brand": pa.array(self.brand_names).take(pa.array(self.item_brand)),
                "merchant_id": pa.array(self.merchant_ids).take(pa.array(self.item_merchant)),
                "price": pa.array(self.item_price, pa.int64()),
                "launched_at": pa.array(self.item_launched_us, pa.int64()).cast(
                    pa.timestamp("us", tz="UTC")
                ),
                "consumable": pa.array(rebuy > 0),
                "rebuy_days": pa.array(rebuy.astype(np.int32), pa.int32(), mask=rebuy == 0),
            }
        )


def _ids(prefix: str, n: int, width: int) -> list[str]:
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


def _brand_names(rng: np.random.Generator, count: int) -> list[str]:
    """Distinct two-character fictional brand names (no real brand is implied)."""
    pairs = [h + t for h in _BRAND_HEADS for t in _BRAND_TAILS]
    picked = rng.choice(len(pairs), size=count, replace=False)
    return [pairs[int(i)] for i in picked]


def _zipf(n: int, rng: np.random.Generator, exponent: float = 1.0) -> FloatArray:
    """Zipf weights over ``n`` things in a random order (who is popular is seeded)."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return np.asarray(rng.permutation(weights), dtype=np.float64)


def build_catalog(
    seed: int, *, n_items: int, start_us: int, days: int, brands_per_top: int = 10
) -> Catalog:
    """Draw the catalog for ``seed``: brands, merchants and ``n_items`` priced items.

    ``start_us`` is the first generated day's start (China midnight, UTC microseconds); about
    :data:`NEW_ARRIVAL_SHARE` of items launch on a day inside the ``days``-long period.
    """
    rng = np.random.default_rng([seed, 0])
    n_tops = len(TAXONOMY)
    top_ids = _ids("c", n_tops, 2)
    leaf_ids: list[str] = []
    leaf_top_l: list[int] = []
    leaf_weight_l: list[float] = []
    leaf_cdf_l: list[float] = []
    leaf_rebuy_l: list[int] = []
    leaf_start_l: list[int] = [0]
    for t, top in enumerate(TAXONOMY):
        weights = np.array([leaf.weight for leaf in top.leaves])
        cdf = np.cumsum(weights) / weights.sum()
        cdf[-1] = 1.0
        for j, leaf in enumerate(top.leaves):
            leaf_ids.append(f"{top_ids[t]}{j + 1:02d}")
            leaf_top_l.append(t)
            leaf_weight_l.append(leaf.weight)
            leaf_cdf_l.append(t + float(cdf[j]))
            leaf_rebuy_l.append(leaf.rebuy_days or 0)
        leaf_start_l.append(len(leaf_ids))
    leaf_top = np.array(leaf_top_l, dtype=np.int64)
    n_leaves = len(leaf_ids)

    brand_names = _brand_names(rng, n_tops * brands_per_top)
    brand_top = np.repeat(np.arange(n_tops, dtype=np.int64), brands_per_top)

    # Merchants: a fixed number per top category; a few, chosen at random, are bad.
    n_merchants = n_tops * MERCHANTS_PER_TOP
    merchant_top = np.repeat(np.arange(n_tops, dtype=np.int64), MERCHANTS_PER_TOP)
    n_bad = max(1, round(n_merchants * BAD_MERCHANT_SHARE))
    merchant_bad = np.zeros(n_merchants, dtype=np.bool_)
    merchant_bad[rng.choice(n_merchants, size=n_bad, replace=False)] = True
    refund = np.where(
        merchant_bad, rng.uniform(0.22, 0.35, n_merchants), rng.uniform(0.02, 0.06, n_merchants)
    )
    complaint = np.where(
        merchant_bad, rng.uniform(0.06, 0.12, n_merchants), rng.uniform(0.002, 0.01, n_merchants)
    )
    merchant_names = _merchant_names(rng, merchant_top, brand_names, brands_per_top)

    # Items: every leaf gets a floor, the rest follow leaf traffic.
    n_items = max(n_items, n_leaves * MIN_ITEMS_PER_LEAF)
    leaf_weight = np.array(leaf_weight_l) / np.array(
        [len(TAXONOMY[t].leaves) for t in leaf_top_l], dtype=np.float64
    )
    extra = rng.multinomial(
        n_items - n_leaves * MIN_ITEMS_PER_LEAF, leaf_weight / leaf_weight.sum()
    )
    per_leaf = extra.astype(np.int64) + MIN_ITEMS_PER_LEAF
    item_leaf = np.repeat(np.arange(n_leaves, dtype=np.int64), per_leaf)
    item_top = leaf_top[item_leaf]
    medians = np.array([leaf.median_cny for top in TAXONOMY for leaf in top.leaves])
    sigmas = np.array([top.sigma for top in TAXONOMY])[item_top]
    cny = np.exp(np.log(medians[item_leaf]) + sigmas * rng.standard_normal(n_items))
    # Prices end in a whole jiao (0.1 CNY) like real list prices, and are at least 1 CNY.
    item_price = np.maximum(100, np.round(cny * 10) * 10).astype(np.int64)

    item_brand = _pick_within_top(rng, item_top, brand_top, n_tops)
    item_merchant = _pick_within_top(rng, item_top, merchant_top, n_tops)

    new = rng.random(n_items) < NEW_ARRIVAL_SHARE
    launch_day = np.where(
        new, rng.integers(0, max(days, 1), n_items), -rng.integers(1, 720, n_items)
    ).astype(np.int64)

    # Price band = price quintile inside the leaf; popularity is Zipf inside each band.
    order = np.lexsort((item_price, item_leaf))
    rank_in_leaf = np.empty(n_items, dtype=np.int64)
    leaf_first = np.concatenate(([0], np.cumsum(per_leaf)[:-1]))
    rank_in_leaf[order] = np.arange(n_items) - np.repeat(leaf_first, per_leaf)
    band = rank_in_leaf * PRICE_BANDS // per_leaf[item_leaf]
    group = item_leaf * PRICE_BANDS + band
    popularity = rng.random(n_items)  # random tie-breaking key: rank inside the group
    group_items = np.lexsort((popularity, group)).astype(np.int64)
    sizes = np.bincount(group, minlength=n_leaves * PRICE_BANDS)
    group_first = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.arange(n_items) - np.repeat(group_first, sizes)
    weights = 1.0 / (rank + 1.0) ** ZIPF_EXPONENT
    cum = np.cumsum(weights)
    before = np.repeat(np.concatenate(([0.0], cum[:-1]))[group_first], sizes)
    totals = np.repeat(np.add.reduceat(weights, group_first), sizes)
    group_cdf = group[group_items] + (cum - before) / totals
    last_in_group = np.cumsum(sizes) - 1
    group_cdf[last_in_group] = np.arange(len(sizes)) + 1.0
    # The most popular item of each group launched before the period: it stands in for new
    # arrivals that a member would otherwise see before their launch day.
    leaders = group_items[group_first]
    launch_day[leaders] = np.minimum(launch_day[leaders], -1)
    fallback = leaders[group]

    launched_us = (
        start_us + launch_day * DAY_US + rng.integers(0, DAY_US, n_items, dtype=np.int64)
    ).astype(np.int64)

    item_id_array = pc.binary_join_element_wise(
        "i", pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n_items + 1)), pa.string()), 7, "0"), ""
    )
    leaf_names = [leaf.name for top in TAXONOMY for leaf in top.leaves]
    titles = pc.binary_join_element_wise(
        pa.array(brand_names).take(pa.array(item_brand)),
        pa.array(leaf_names).take(pa.array(item_leaf)),
        pa.array(_TITLE_SUFFIXES).take(pa.array(rng.integers(0, len(_TITLE_SUFFIXES), n_items))),
        " ",
    )
    queries, query_start = _queries(leaf_names, leaf_top_l, brand_names, brands_per_top)
    return Catalog(
        top_ids=top_ids,
        leaf_ids=leaf_ids,
        leaf_top=leaf_top,
        leaf_start=np.array(leaf_start_l, dtype=np.int64),
        leaf_cdf=np.array(leaf_cdf_l),
        leaf_rebuy=np.array(leaf_rebuy_l, dtype=np.int64),
        brand_names=brand_names,
        brand_top=brand_top,
        merchant_ids=_ids("s", n_merchants, 4),
        merchant_names=merchant_names,
        merchant_top=merchant_top,
        merchant_bad=merchant_bad,
        merchant_refund=refund,
        merchant_complaint=complaint,
        item_leaf=item_leaf,
        item_brand=item_brand,
        item_merchant=item_merchant,
        item_price=item_price,
        item_launch_day=launch_day,
        item_launched_us=launched_us,
        item_fallback=fallback.astype(np.int64),
        group_items=group_items,
        group_cdf=group_cdf,
        group_last=last_in_group.astype(np.int64),
        item_id_array=item_id_array,
        item_title_array=titles,
        query_array=pa.array(queries, pa.string()),
        query_start=query_start,
    )


def _pick_within_top(
    rng: np.random.Generator, item_top: IntArray, owner_top: IntArray, n_tops: int
) -> IntArray:
    """For each item, one owner (brand or merchant) of its top category, Zipf-weighted."""
    picked = np.empty(len(item_top), dtype=np.int64)
    for t in range(n_tops):
        owners = np.flatnonzero(owner_top == t)
        weights = _zipf(len(owners), rng, 0.9)
        mine = np.flatnonzero(item_top == t)
        picked[mine] = rng.choice(owners, size=len(mine), p=weights / weights.sum())
    return picked


def _merchant_names(
    rng: np.random.Generator, merchant_top: IntArray, brands: list[str], brands_per_top: int
) -> list[str]:
    """Shop names: the first few of each category are brand flagships, the rest resellers."""
    names: list[str] = []
    seen: set[str] = set()
    for m, t in enumerate(merchant_top.tolist()):
        j = m - t * MERCHANTS_PER_TOP
        if j < brands_per_top // 2:
            name = f"{brands[t * brands_per_top + j]}官方旗舰店"
        else:
            city = _SHOP_CITIES[int(rng.integers(len(_SHOP_CITIES)))]
            word = _SHOP_WORDS[int(rng.integers(len(_SHOP_WORDS)))]
            kind = _SHOP_KINDS[int(rng.integers(len(_SHOP_KINDS)))]
            name = f"{city}{TOP_NAMES[t]}{word}{kind}"
        base, n = name, 2
        while name in seen:
            name, n = f"{base}{n}号店", n + 1
        seen.add(name)
        names.append(name)
    return names


def _queries(
    leaf_names: list[str], leaf_top: list[int], brands: list[str], brands_per_top: int
) -> tuple[list[str], IntArray]:
    """Search phrases per leaf (generic ones, then one per brand of its top category)."""
    queries: list[str] = []
    start: list[int] = []
    for name, t in zip(leaf_names, leaf_top, strict=True):
        start.append(len(queries))
        queries.extend(template.format(leaf=name) for template in _QUERY_TEMPLATES)
        queries.extend(
            f"{brand} {name}" for brand in brands[t * brands_per_top : (t + 1) * brands_per_top]
        )
    start.append(len(queries))
    return queries, np.array(start, dtype=np.int64)
