"""Member personas, the behaviour parameters they imply, and the members drawn from them.

A persona is the latent truth behind a member (written to ``members.parquet`` for evaluation):
it sets which categories they like, which price band, how active they are, when in the day and
week they shop, on which channel, and whether they drift away. Members add their own seeded
variation on top, so two bargain hunters never behave identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from memberwise.demo.catalog import DAY_US, TOP_NAMES, BoolArray, FloatArray, IntArray

#: Purchase channels, in the order persona channel shares are given.
CHANNELS: tuple[str, ...] = ("app", "web", "mini_program", "live_stream")
#: Rhythms: when in the day (hour profile) and week (day weights) a member shops.
RHYTHMS: tuple[str, ...] = ("regular", "night_owl", "weekend")
REGULAR, NIGHT_OWL, WEEKEND = range(3)

# Session-start weights by hour of the China (UTC+8) day: lunch and 20:00-23:00 peaks for most
# members; night owls peak 22:00-02:00.
HOUR_WEIGHTS: FloatArray = np.array(
    [
        # 0h    1h    2h    3h    4h    5h    6h    7h    8h    9h   10h   11h
        [0.30, 0.12, 0.06, 0.04, 0.03, 0.04, 0.10, 0.35, 0.60, 0.75, 0.85, 1.00,
         1.45, 1.20, 0.90, 0.85, 0.85, 0.90, 1.00, 1.25, 1.60, 1.75, 1.65, 0.95],  # regular
        [1.70, 1.50, 1.00, 0.45, 0.15, 0.08, 0.08, 0.12, 0.20, 0.30, 0.40, 0.50,
         0.70, 0.55, 0.45, 0.45, 0.50, 0.55, 0.65, 0.80, 1.00, 1.30, 1.90, 2.10],  # night owl
    ]
)  # fmt: skip
#: The hour profile (row of :data:`HOUR_WEIGHTS`) of each rhythm: weekend shoppers keep
#: regular hours, they just shop on other days.
HOUR_PROFILE: IntArray = np.array([0, 1, 0], dtype=np.int64)

#: Mean of a log-normal multiplier with log-sd ``s`` is 1 when its log-mean is ``-s**2/2``.
_ACTIVITY_SD = 0.75
_CONVERSION_SD = 0.35
_TASTE_SD = 0.3
#: How much more active and more likely to buy a whale (black-card candidate) is.
WHALE_ACTIVITY = 4.0
WHALE_CONVERSION = 4.0
#: Share of members who register inside the period (their first events come after it).
JOINER_SHARE = 0.08
#: How a member's engagement moves their chance of drifting away in the period: the chance is
#: ``min(1, CHURN_SCALE * churn * engagement ** -CHURN_ENGAGEMENT)`` with ``churn`` the persona's
#: and ``engagement`` the member's activity x conversion relative to their persona's (mean 1).
#: Members who shop less leave more (a member half as engaged as their persona's average is
#: 2.8 times as likely to), as on real platforms; before this, churn struck members at random
#: and no model could see it coming from their behaviour.
CHURN_ENGAGEMENT = 1.5
CHURN_SCALE = 2.0


@dataclass(frozen=True)
class Persona:
    """Behaviour parameters of one kind of member; multipliers are relative to the average.

    ``price_quantile`` is the favoured position inside a leaf's price range (0 cheapest,
    1 dearest); ``whale`` the chance of being a very-high-value member (the black-card
    candidates); ``staples`` the mean number of consumables re-bought on a cycle; ``churn``
    the chance of drifting away inside the period (scaled by engagement, see
    :data:`CHURN_ENGAGEMENT`; 1 for the dormant, who all drift away). The dormant also engage
    shallowly while they are still around: few favourites, carts, searches and reviews.
    """

    name: str
    share: float
    activity: float
    conversion: float
    cart: float
    favorite: float
    price_quantile: float
    search: float
    review: float
    churn: float
    whale: float
    staples: float
    female: float
    age: tuple[float, float]
    channels: tuple[float, float, float, float]
    rhythms: tuple[float, float, float]
    affinity: dict[str, float] = field(default_factory=dict)


#: The personas, one per row; the fields are in :class:`Persona` order:
#: name, share, activity, conversion, cart, favorite, price_quantile, search, review, churn,
#: whale, staples, female / (age mean, sd), channels (app, web, mini_program, live_stream),
#: rhythms (regular, night_owl, weekend) / category affinity (others get 0.4).
PERSONAS: tuple[Persona, ...] = (
    Persona(
        "bargain_hunter", 0.16, 1.1, 1.0, 1.4, 1.2, 0.18, 0.55, 0.25, 0.10, 0.0, 0.6, 0.60,
        (36, 11), (0.55, 0.10, 0.20, 0.15), (0.70, 0.10, 0.20),
        {"食品": 3, "个护清洁": 3, "服饰": 2, "家居": 2, "生鲜": 1.5, "母婴": 1},
    ),
    Persona(
        "young_parent", 0.13, 1.4, 1.2, 1.1, 1.0, 0.50, 0.40, 0.30, 0.05, 0.0005, 2.2, 0.75,
        (31, 4), (0.75, 0.05, 0.15, 0.05), (0.60, 0.30, 0.10),
        {"母婴": 8, "生鲜": 1.5, "食品": 1.5, "个护清洁": 2, "家居": 1.5, "图书": 1},
    ),
    Persona(
        "tech_enthusiast", 0.10, 1.2, 0.8, 1.0, 1.5, 0.70, 0.45, 0.20, 0.06, 0.002, 0.2, 0.20,
        (28, 6), (0.60, 0.35, 0.03, 0.02), (0.50, 0.40, 0.10),
        {"数码": 8, "家电": 3, "运动户外": 1.5, "汽车用品": 1},
    ),
    Persona(
        "luxury_shopper", 0.04, 1.0, 1.0, 0.9, 1.3, 0.85, 0.30, 0.15, 0.05, 0.01, 0.3, 0.60,
        (38, 8), (0.80, 0.10, 0.02, 0.08), (0.70, 0.15, 0.15),
        {"珠宝奢品": 7, "美妆": 3, "服饰": 3, "酒水": 1.5, "数码": 1},
    ),
    Persona(
        "grocery_rebuyer", 0.12, 1.3, 1.3, 1.2, 0.6, 0.45, 0.25, 0.20, 0.05, 0.0, 3.0, 0.65,
        (42, 10), (0.55, 0.05, 0.38, 0.02), (0.75, 0.05, 0.20),
        {"生鲜": 6, "食品": 4, "个护清洁": 3, "宠物": 1.5, "酒水": 1},
    ),
    Persona(
        "fashion_lover", 0.14, 1.2, 0.9, 1.1, 1.6, 0.60, 0.40, 0.30, 0.08, 0.001, 0.3, 0.80,
        (26, 5), (0.60, 0.05, 0.10, 0.25), (0.60, 0.25, 0.15),
        {"服饰": 7, "美妆": 4, "运动户外": 1.5, "珠宝奢品": 0.8},
    ),
    Persona(
        "casual_browser", 0.20, 0.6, 0.6, 0.7, 0.8, 0.45, 0.25, 0.10, 0.12, 0.0, 0.2, 0.50,
        (33, 12), (0.60, 0.20, 0.15, 0.05), (0.70, 0.15, 0.15),
        {"服饰": 1.5, "食品": 1.5, "宠物": 1.2, "图书": 1.2},
    ),
    Persona(
        "dormant", 0.11, 0.8, 0.8, 0.5, 0.3, 0.40, 0.10, 0.05, 1.0, 0.0, 0.3, 0.50,
        (35, 12), (0.60, 0.20, 0.15, 0.05), (0.75, 0.10, 0.15),
    ),
)  # fmt: skip
PERSONA_NAMES: tuple[str, ...] = tuple(p.name for p in PERSONAS)

#: Weight of a top category a persona has no stated affinity for.
_BASE_AFFINITY = 0.4
#: How often a session is about the member's first / second favourite category.
_FAVOURITE_SHARES = (0.45, 0.25)


def _persona_matrix(values: list[list[float]]) -> FloatArray:
    return np.array(values, dtype=np.float64)


def _cdf_rows(weights: FloatArray) -> FloatArray:
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    return cdf


#: Per persona: CDF over top categories, channels and rhythms (rows follow :data:`PERSONAS`).
AFFINITY: FloatArray = _persona_matrix(
    [[p.affinity.get(t, _BASE_AFFINITY) for t in TOP_NAMES] for p in PERSONAS]
)
AFFINITY_CDF = _cdf_rows(AFFINITY)
CHANNEL_CDF = _cdf_rows(_persona_matrix([list(p.channels) for p in PERSONAS]))
RHYTHM_CDF = _cdf_rows(_persona_matrix([list(p.rhythms) for p in PERSONAS]))
HOUR_CDF = _cdf_rows(HOUR_WEIGHTS)


def persona_param(name: str, persona: IntArray) -> FloatArray:
    """The :class:`Persona` field ``name`` for each member's persona index."""
    return np.array([getattr(p, name) for p in PERSONAS], dtype=np.float64)[persona]


def pick_rows(rng: np.random.Generator, cdf: FloatArray, rows: IntArray) -> IntArray:
    """One category per row index from the matching CDF row (inverse-CDF, vectorized)."""
    u = rng.random(len(rows))
    picked = np.minimum((u[:, None] >= cdf[rows]).sum(axis=1), cdf.shape[1] - 1)
    return np.asarray(picked, dtype=np.int64)


@dataclass(frozen=True)
class Members:
    """A block of members as arrays: persona, tastes, rhythm and active window.

    ``start_day``/``end_day`` bound the days (0 = first generated day, end exclusive) on which
    the member is active: joiners start late, churners stop early.
    """

    persona: IntArray
    rhythm: IntArray
    whale: BoolArray
    top1: IntArray
    top2: IntArray
    activity: FloatArray
    conversion: FloatArray
    cart: FloatArray
    favorite: FloatArray
    price_quantile: FloatArray
    channel: IntArray
    region: IntArray
    start_day: IntArray
    end_day: IntArray
    registered_us: IntArray
    tenure_days: IntArray

    def __len__(self) -> int:
        return len(self.persona)


def _lognormal_one(rng: np.random.Generator, sd: float, n: int) -> FloatArray:
    """Multipliers with mean 1 and log-sd ``sd``."""
    return np.exp(rng.normal(-sd * sd / 2, sd, n))


def sample_members(rng: np.random.Generator, n: int, *, days: int, start_us: int) -> Members:
    """Draw ``n`` members' behaviour for a period of ``days`` starting at ``start_us``."""
    shares = np.array([p.share for p in PERSONAS])
    persona = rng.choice(len(PERSONAS), size=n, p=shares / shares.sum()).astype(np.int64)

    def param(name: str) -> FloatArray:
        return persona_param(name, persona)

    whale = rng.random(n) < param("whale")
    top1 = pick_rows(rng, AFFINITY_CDF, persona)
    top2 = pick_rows(rng, AFFINITY_CDF, persona)
    activity = param("activity") * _lognormal_one(rng, _ACTIVITY_SD, n)
    # Whales are at least averagely active, then several times more, and buy far more often.
    activity = np.where(whale, np.maximum(activity, 1.0) * WHALE_ACTIVITY, activity)
    conversion = param("conversion") * _lognormal_one(rng, _CONVERSION_SD, n)
    conversion *= np.where(whale, WHALE_CONVERSION, 1)
    cart = param("cart") * _lognormal_one(rng, _TASTE_SD, n)
    favorite = param("favorite") * _lognormal_one(rng, _TASTE_SD, n)
    price_quantile = np.clip(param("price_quantile") + rng.normal(0, 0.12, n), 0.02, 0.98)
    price_quantile = np.where(whale, np.maximum(price_quantile, 0.95), price_quantile)
    rhythm = pick_rows(rng, RHYTHM_CDF, persona)
    channel = pick_rows(rng, CHANNEL_CDF, persona)

    # Joiners register on the day before their first active day; the rest before the period.
    joins = (rng.random(n) < JOINER_SHARE) & (days >= 2)
    join_day = rng.integers(1, max(days, 2), n)
    start_day = np.where(joins, join_day, 0).astype(np.int64)
    tenure_days = np.minimum(1 + rng.exponential(900, n), 15 * 365).astype(np.int64)
    registered_day = np.where(joins, start_day - 1, -tenure_days)
    registered_us = start_us + registered_day * DAY_US + rng.integers(0, DAY_US * 5 // 6, n)
    tenure_days = np.where(joins, 0, tenure_days)

    engagement = (activity * conversion) / (param("activity") * param("conversion"))
    chance = CHURN_SCALE * param("churn") * engagement**-CHURN_ENGAGEMENT
    churn = rng.random(n) < np.where(param("churn") >= 1, 1.0, np.minimum(chance, 1.0))
    dormant = persona == PERSONA_NAMES.index("dormant")
    low, high = np.where(dormant, 0.05, 0.1), np.where(dormant, 0.6, 0.9)
    fraction = low + (high - low) * rng.random(n)
    churn_day = start_day + 1 + np.floor(fraction * (days - start_day - 1)).astype(np.int64)
    end_day = np.where(churn, np.minimum(churn_day, days), days).astype(np.int64)
    return Members(
        persona=persona,
        rhythm=rhythm,
        whale=whale,
        top1=top1,
        top2=top2,
        activity=activity,
        conversion=conversion,
        cart=cart,
        favorite=favorite,
        price_quantile=price_quantile,
        channel=channel,
        region=sample_regions(rng, n),
        start_day=start_day,
        end_day=end_day,
        registered_us=registered_us.astype(np.int64),
        tenure_days=tenure_days,
    )


def session_tops(rng: np.random.Generator, members: Members, member: IntArray) -> IntArray:
    """The category each session is about: mostly the member's favourites, else the persona's."""
    u = rng.random(len(member))
    drawn = pick_rows(rng, AFFINITY_CDF, members.persona[member])
    first, second = _FAVOURITE_SHARES
    favourite = np.where(u < first, members.top1[member], members.top2[member])
    return np.asarray(np.where(u < first + second, favourite, drawn), dtype=np.int64)


# --- personal data (synthetic; for the member table only) ---------------------------------

#: Provinces with a rough e-commerce weight and a few cities each.
PROVINCES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("广东", 12.0, ("广州", "深圳", "东莞", "佛山")),
    ("浙江", 8.0, ("杭州", "宁波", "温州", "金华")),
    ("江苏", 8.0, ("南京", "苏州", "无锡", "常州")),
    ("上海", 5.0, ("上海",)),
    ("北京", 5.0, ("北京",)),
    ("山东", 6.0, ("济南", "青岛", "烟台")),
    ("四川", 5.0, ("成都", "绵阳")),
    ("福建", 4.0, ("福州", "厦门", "泉州")),
    ("河南", 5.0, ("郑州", "洛阳")),
    ("湖北", 4.0, ("武汉", "宜昌")),
    ("湖南", 4.0, ("长沙", "株洲")),
    ("河北", 4.0, ("石家庄", "保定")),
    ("安徽", 3.5, ("合肥", "芜湖")),
    ("辽宁", 3.0, ("沈阳", "大连")),
    ("陕西", 2.5, ("西安",)),
    ("重庆", 2.5, ("重庆",)),
    ("天津", 2.0, ("天津",)),
    ("江西", 2.0, ("南昌", "赣州")),
    ("广西", 2.0, ("南宁", "桂林")),
    ("云南", 2.0, ("昆明",)),
    ("山西", 1.8, ("太原",)),
    ("黑龙江", 1.8, ("哈尔滨",)),
    ("吉林", 1.2, ("长春",)),
    ("贵州", 1.2, ("贵阳",)),
    ("新疆", 1.0, ("乌鲁木齐",)),
    ("内蒙古", 1.0, ("呼和浩特",)),
    ("海南", 0.8, ("海口", "三亚")),
    ("甘肃", 0.8, ("兰州",)),
    ("宁夏", 0.3, ("银川",)),
    ("青海", 0.3, ("西宁",)),
    ("西藏", 0.2, ("拉萨",)),
)
PROVINCE_NAMES: tuple[str, ...] = tuple(p[0] for p in PROVINCES)
_CITIES: tuple[str, ...] = tuple(c for p in PROVINCES for c in p[2])
_CITY_START: IntArray = np.cumsum([0, *(len(p[2]) for p in PROVINCES)]).astype(np.int64)

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏"
    "魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵"
)
_MALE_CHARS = "伟强磊军洋勇杰涛明超辉刚鹏浩宇峰斌俊建华志文博晨子轩然航睿哲凯鑫昊天成"
_FEMALE_CHARS = "芳娜敏静丽艳娟霞秀玲婷雪慧莹琳欣怡佳梦瑶雨萱思涵悦诗蕾倩颖洁月妍琪"
_PHONE_PREFIXES = (
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155",
    "156", "157", "158", "159", "166", "176", "177", "178", "180", "181", "182", "183", "185",
    "186", "187", "188", "189", "191", "198", "199",
)  # fmt: skip
# Reserved example domains (RFC 2606) so a demo can never mail a real person.
_EMAIL_DOMAINS = ("example.com", "example.net", "example.org")
# Phone and e-mail numbers are an affine bijection of the member number: unique, not sequential.
_PHONE_SPACE, _PHONE_A, _PHONE_B = 100_000_000, 48_271_137, 12_345_679
_MAIL_SPACE, _MAIL_A, _MAIL_B = 9_000_000_000, 2_654_435_761, 1_013_904_223


def _chars(pool: str) -> pa.Array:
    return pa.array(list(pool), pa.string())


def _take(values: pa.Array, index: npt.NDArray[np.int64]) -> pa.Array:
    return values.take(pa.array(index))


def member_ids(first: int, n: int) -> pa.Array:
    """Member ids ``m00000001``... for global member numbers ``first + 1 .. first + n``."""
    numbers = pa.array(np.arange(first + 1, first + n + 1, dtype=np.int64))
    return pc.binary_join_element_wise("m", pc.utf8_lpad(pc.cast(numbers, pa.string()), 8, "0"), "")


def member_table(
    rng: np.random.Generator, members: Members, *, first: int, period_year: int
) -> pa.Table:
    """The ``members.parquet`` rows of a block: synthetic personal data plus the latent persona.

    ``first`` is the global number of the block's first member: ids, and phone numbers and
    e-mail addresses unique across the platform, derive from it.
    """
    n = len(members)
    region = members.region
    persona = members.persona

    def param(name: str) -> FloatArray:
        return persona_param(name, persona)

    female = rng.random(n) < param("female")
    pool = pa.array(list(_FEMALE_CHARS + _MALE_CHARS), pa.string())
    offset = np.where(female, 0, len(_FEMALE_CHARS))
    width = np.where(female, len(_FEMALE_CHARS), len(_MALE_CHARS))
    given1 = offset + rng.integers(0, 1 << 30, n) % width
    given2 = offset + rng.integers(0, 1 << 30, n) % width
    single = rng.random(n) < 0.3
    surname_weights = 1.0 / np.arange(1, len(_SURNAMES) + 1) ** 0.7
    surname = rng.choice(len(_SURNAMES), size=n, p=surname_weights / surname_weights.sum())
    name = pc.binary_join_element_wise(
        _take(_chars(_SURNAMES), surname.astype(np.int64)),
        _take(pool, given1),
        pc.if_else(pa.array(single), "", _take(pool, given2)),
        "",
    )
    number = np.arange(first + 1, first + n + 1, dtype=np.int64)
    prefix = rng.integers(0, len(_PHONE_PREFIXES), n)
    suffix = (number * _PHONE_A + _PHONE_B) % _PHONE_SPACE
    phone = pc.binary_join_element_wise(
        _take(pa.array(_PHONE_PREFIXES), prefix),
        pc.utf8_lpad(pc.cast(pa.array(suffix), pa.string()), 8, "0"),
        "",
    )
    mailbox = (number * _MAIL_A + _MAIL_B) % _MAIL_SPACE + 100_000
    email = pc.binary_join_element_wise(
        pc.cast(pa.array(mailbox), pa.string()),
        _take(pa.array(_EMAIL_DOMAINS), rng.integers(0, len(_EMAIL_DOMAINS), n)),
        "@",
    )
    age_mean, age_sd = _age(persona)
    birth_year = np.clip(
        np.round(period_year - rng.normal(age_mean, age_sd)), 1945, period_year - 16
    )
    city = _CITY_START[region] + rng.integers(0, 1 << 30, n) % np.diff(_CITY_START)[region]
    value = np.log(members.activity * members.conversion)
    stars = 2.5 + np.log1p(members.tenure_days / 365) + 0.6 * value + rng.normal(0, 0.7, n)
    stars = np.clip(np.round(stars + np.where(members.whale, 2, 0)), 1, 7)
    return pa.table(
        {
            "member_id": member_ids(first, n),
            "name": name,
            "phone": phone,
            "email": email,
            "gender": pa.array(np.where(female, "F", "M")),
            "birth_year": pa.array(birth_year.astype(np.int32)),
            "region": _take(pa.array(PROVINCE_NAMES), region),
            "city": _take(pa.array(_CITIES), city.astype(np.int64)),
            "registered_at": pa.array(members.registered_us).cast(pa.timestamp("us", tz="UTC")),
            "persona": _take(pa.array(PERSONA_NAMES), persona),
            "credit_stars": pa.array(stars.astype(np.int32)),
        }
    )


def _age(persona: IntArray) -> tuple[FloatArray, FloatArray]:
    ages = np.array([p.age for p in PERSONAS], dtype=np.float64)[persona]
    return ages[:, 0], ages[:, 1]


def sample_regions(rng: np.random.Generator, n: int) -> IntArray:
    """Each member's province, weighted by its share of online shoppers."""
    weights = np.array([p[1] for p in PROVINCES])
    return rng.choice(len(PROVINCES), size=n, p=weights / weights.sum()).astype(np.int64)
