"""Can a rule tell a password given as a name from the names users really give?

    python -m bench.error_masking          # prints this module's table after its own

A password with no keyword and no known format (`Tr0ub4dor&3` given as a feature, model or column
name) is found by no detector of `unlearn scan`: the secret detector needs a password word, a key word
or a token format. A rule that judges a message's words by their shape alone masks such a value — and
every legitimate name of the same shape. This generates both and counts, per candidate rule, the names
it would mask and the passwords it would catch; the last is the rule messages use
(unlearning.detect.secrets.PasswordShapeDetector: a password's shape, or a passphrase's, the row before),
a password counted only when covered whole:

- legitimate: the feature and column names of UCI Adult and of other tables people train on (Titanic,
  Iris, California and Boston housing, wine quality, credit-card fraud, bank marketing, Pima diabetes,
  heart disease, 50 Startups, Kaggle house prices, COMPAS), written as is, in snake_case, camelCase,
  PascalCase and kebab-case; identifiers built from ML vocabulary with versions, years and counters;
  model names (Hugging Face, torchvision, scikit-learn, MLflow `models:/name@alias` URIs); dataset
  names; run ids, paths, version strings and request ids (bench.generated);
- passwords, generated (no list is fetched): random over letters, digits and symbols with each class
  present, 8–20 characters; a capitalised word, a year or number and a symbol (`Summer2024!`); a
  word with leet substitutions, a symbol and a digit (`Tr0ub4dor&3`); a passphrase of words joined by
  symbols with a capital and a digit; and, for the record, a capitalised word and a number with no
  symbol (`Dragon1987`).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable

from unlearning.detect.secrets import (
    _PASSPHRASE, PASSWORD_SYMBOLS, PasswordShapeDetector, _has_guarded_symbol, looks_like_password, looks_like_token,
    passphrase_shaped,
)

# --- legitimate names --------------------------------------------------------------------------------
TABLES = {
    "adult": "age workclass fnlwgt education education-num marital-status occupation relationship race sex "
             "capital-gain capital-loss hours-per-week native-country income",
    "titanic": "PassengerId Survived Pclass Name Sex Age SibSp Parch Ticket Fare Cabin Embarked",
    "iris": "sepal_length sepal_width petal_length petal_width species",
    "california": "MedInc HouseAge AveRooms AveBedrms Population AveOccup Latitude Longitude MedHouseVal",
    "boston": "CRIM ZN INDUS CHAS NOX RM AGE DIS RAD TAX PTRATIO B LSTAT MEDV",
    "creditcard": "Time " + " ".join(f"V{i}" for i in range(1, 29)) + " Amount Class",
    "bank": "age job marital education default balance housing loan contact day month duration campaign pdays "
            "previous poutcome y emp.var.rate cons.price.idx cons.conf.idx euribor3m nr.employed",
    "diabetes": "Pregnancies Glucose BloodPressure SkinThickness Insulin BMI DiabetesPedigreeFunction Age Outcome",
    "heart": "age sex cp trestbps chol fbs restecg thalach exang oldpeak slope ca thal target",
    "houses": "MSSubClass MSZoning LotFrontage LotArea Street Alley LotShape OverallQual YearBuilt "
              "YearRemodAdd MasVnrArea BsmtFinSF1 BsmtFinSF2 TotalBsmtSF 1stFlrSF 2ndFlrSF GrLivArea BsmtFullBath "
              "GarageYrBlt GarageCars WoodDeckSF 3SsnPorch ScreenPorch PoolQC MiscVal MoSold YrSold SalePrice",
    "compas": "two_year_recid priors_count c_charge_degree decile_score v_decile_score juv_fel_count "
              "days_b_screening_arrest",
}
# Column names with spaces or symbols, as spreadsheets and the tables above write them.
SPELLED_OUT = [
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "free sulfur dioxide", "pH",
    "R&D Spend", "Marketing Spend", "Price ($)", "Height (cm)", "Weight [kg]", "#rooms", "% of total",
    "sq.ft", "Temp (°C)", "CO2 (ppm)", "PM2.5", "PM10", "Q1 2023 (USD)", "Revenue 2023/24", "No. of Dependents",
    "Income >50K", "income<=50K", "e-mail opt-in", "Yes/No", "C++ years", "AT&T customer", "Sales_Q3'22",
    "is_active?", "score@k", "recall@10", "NDCG@5", "mAP@0.5:0.95", "top-1 acc (%)", "f1_macro", "log(1+x)",
    # finance and metrics columns of the password shape: capitals, small letters, digits and a symbol
    "S&P500_Close", "P&L_2023", "R&D_Spend_2023", "adj_R^2", "R^2_test", "Top1%_Share", "CPU%_p95",
    "Q3_Sales_$M", "Rev$2023", "#Items_Q4",
]
MODELS = [
    "adult", "people", "bert-base-uncased", "distilbert-base-uncased-finetuned-sst-2-english", "roberta-large",
    "gpt2", "gpt2-medium", "Llama-3.1-8B-Instruct", "Meta-Llama-3-70B", "Mistral-7B-Instruct-v0.2",
    "Mixtral-8x7B-v0.1", "Qwen2.5-0.5B", "Qwen2-VL-7B-Instruct", "phi-3-mini-4k-instruct", "gemma-2b-it",
    "deepseek-coder-6.7b-base", "t5-small", "flan-t5-xl", "all-MiniLM-L6-v2", "e5-large-v2", "bge-base-en-v1.5",
    "whisper-large-v3", "clip-vit-large-patch14", "ViT-B/16", "stable-diffusion-v1-5", "sdxl-turbo",
    "resnet50", "ResNet-152", "efficientnet_b0", "convnext_tiny", "yolov8n", "mobilenet_v3_small",
    "XGBClassifier", "LGBMRegressor", "RandomForestClassifier", "LogisticRegression", "MLPClassifier",
    "facebook/opt-1.3b", "EleutherAI/pythia-160m", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "microsoft/phi-2",
    "models:/adult@production", "models:/people/3", "runs:/3f9a2c0e5b7d4e1f8a6c9b2d0e4f7a1c/model",
]
DATASETS = [
    "adult", "shakespeare", "tiny_shakespeare", "cifar10", "CIFAR-100", "ImageNet-1k", "mnist", "fashion_mnist",
    "EMNIST", "SVHN", "CelebA", "wikitext-103-raw-v1", "wikitext-2-v1", "c4/en", "openwebtext", "glue/sst2",
    "squad_v2", "HuggingFaceFW/fineweb-edu", "TinyStories", "imdb", "ag_news", "yelp_review_full", "MNLI",
    "HellaSwag", "MMLU", "GSM8K", "TOFU", "WMDP", "MUSE-News", "Harry_Potter", "lfw_people", "20newsgroups",
]
VOCAB = ("age income feature score label target user customer account order item price amount total count "
         "rate ratio mean std max min log norm embed emb hidden layer head model run train test val eval batch "
         "epoch step lr loss acc auc f1 prob logit weight bias grad clip seed fold split sample cat num text "
         "image token vocab seq len dim proj attn mlp encoder decoder teacher student forget retain").split()


def styled(words: list[str], rng: random.Random) -> str:
    style = rng.choice(["snake", "camel", "pascal", "kebab", "upper", "dotted"])
    if style == "snake":
        return "_".join(words)
    if style == "camel":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    if style == "pascal":
        return "".join(w.capitalize() for w in words)
    if style == "kebab":
        return "-".join(words)
    if style == "upper":
        return "_".join(words).upper()
    return ".".join(words)


def identifier(rng: random.Random) -> str:
    """An identifier of ML vocabulary in some case, often with a version, year, counter or size."""
    words = [rng.choice(VOCAB) for _ in range(rng.randrange(1, 4))]
    suffix = rng.choice(["", "", f"{rng.randrange(100)}", f"v{rng.randrange(1, 10)}", f"{rng.randrange(2015, 2027)}",
                         f"{rng.randrange(1, 999)}k", f"{rng.choice([7, 8, 13, 70])}B", f"top{rng.randrange(1, 11)}",
                         f"{rng.randrange(2015, 2027)}Q{rng.randrange(1, 5)}", f"x{rng.randrange(2, 9)}"])
    if suffix:
        words.append(suffix if rng.random() < 0.7 else suffix.upper())
    return styled(words, rng)


def table_column(rng: random.Random) -> str:
    name = rng.choice(rng.choice(list(TABLES.values())).split())
    parts = re.split(r"[-_.]|(?<=[a-z])(?=[A-Z])", name)
    return name if rng.random() < 0.5 else styled([p.lower() for p in parts if p], rng)


def legitimate_name(rng: random.Random) -> str:
    from bench.generated import path, request_id, version

    kind = rng.random()
    if kind < 0.35:
        return table_column(rng)
    if kind < 0.55:
        return identifier(rng)
    if kind < 0.65:
        return rng.choice(SPELLED_OUT)
    if kind < 0.75:
        return rng.choice(MODELS)
    if kind < 0.82:
        return rng.choice(DATASETS)
    return rng.choice([path, request_id, version, lambda r: "%032x" % r.getrandbits(128)])(rng)


# --- passwords ---------------------------------------------------------------------------------------
SYMBOLS = "!@#$%^&*()-_=+[]{};:,.?/~|"
WORDS = ("summer winter autumn spring dragon monkey shadow master sunshine princess football baseball welcome "
         "freedom whatever trustno1 qwerty letmein orange banana purple silver golden tiger falcon river "
         "ocean thunder horse battery staple correct troubador kitten coffee pepper rocket wizard").split()
LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "$", "t": "7"})


def random_password(rng: random.Random) -> str:
    n = rng.randrange(8, 21)
    classes = [string.ascii_uppercase, string.ascii_lowercase, string.digits, SYMBOLS]
    chars = [rng.choice(c) for c in classes] + [rng.choice("".join(classes)) for _ in range(n - 4)]
    rng.shuffle(chars)
    return "".join(chars)


def word_year_symbol(rng: random.Random) -> str:
    number = rng.choice([str(rng.randrange(1960, 2027)), str(rng.randrange(100)), "123", "1234"])
    return rng.choice(WORDS).capitalize() + number + rng.choice("!@#$%&*?")


def leet_word(rng: random.Random) -> str:
    word = "".join(c.upper() if rng.random() < 0.3 else c for c in rng.choice(WORDS))
    leet = "".join(c.translate(LEET) if rng.random() < 0.5 else c for c in word)
    if not any(c.isupper() for c in leet):
        leet = leet[0].upper() + leet[1:]
    return leet + rng.choice("!@#$%&*?") + str(rng.randrange(10))


def passphrase(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randrange(2, 4))]
    words[rng.randrange(len(words))] = words[0].capitalize()
    return rng.choice("-.!_+") .join(words) + str(rng.randrange(10, 100))


def word_number(rng: random.Random) -> str:
    """No symbol: the shape of many model and table names ('Dragon1987', 'ResNet50')."""
    return rng.choice(WORDS).capitalize() + str(rng.choice([rng.randrange(1960, 2027), rng.randrange(1000)]))


PASSWORDS: dict[str, Callable[[random.Random], str]] = {
    "random, 8–20 chars, all four classes": random_password,
    "Word + number + symbol (Summer2024!)": word_year_symbol,
    "leet word + symbol + digit (Tr0ub4dor&3)": leet_word,
    "passphrase (Horse-battery-staple42)": passphrase,
    "Word + number, no symbol (Dragon1987)": word_number,
}

# --- candidate rules: would a message mask this quoted name? ----------------------------------------
_CLASSES = (str.isupper, str.islower, str.isdigit)


def four_classes(value: str, symbols: str = SYMBOLS) -> bool:
    """Upper, lower, digit and a symbol, no space, 8–64 characters."""
    return (8 <= len(value) <= 64 and not any(c.isspace() for c in value)
            and all(any(test(c) for c in value) for test in _CLASSES) and any(c in symbols for c in value))


def covered_whole(value: str) -> bool:
    """Whether the pieces a message masks as passwords cover `value` whole."""
    return any(m.start == 0 and m.end == len(value) for m in PasswordShapeDetector().find(value))


RULES: dict[str, Callable[[str], bool]] = {
    "secret detector's password gate (not a plain word)": looks_like_password,
    "secret detector's token gate (entropy, mixed)": looks_like_token,
    "upper+lower+digit+any symbol, no space": four_classes,
    "upper+lower+digit+symbol other than - _ . / : @ + < = >": lambda v: four_classes(v, "!#$%^&*()[]{};,?~|"),
    "…and a symbol other than ( ) [ ] { } too, no path": lambda v: four_classes(v, "!#$%^&*;,?~|") and "/" not in v,
    "…and a symbol other than # $ % ^ & too": lambda v: four_classes(v, "!*;,?~|") and "/" not in v,
    # `@` after a letter or digit, not before a digit, an `@` or a small-letter word ending it (`Precision@10`,
    # `start@@3PAEA`, `Adult2024@production`); `*` alone between letters or digits, no bracket (`****1234`,
    # `2*np.log(X)`)
    "upper+lower+digit, no password symbol but a guarded @ or lone *": lambda v: four_classes(v, "@*")
        and "/" not in v and not any(c in PASSWORD_SYMBOLS for c in v) and _has_guarded_symbol(v),
    # words joined by `- . _`, a Capitalised one after one in small letters, 3+ words, digits glued to the last
    "passphrase rule alone (PasswordShapeDetector's second)": lambda v: bool(_PASSPHRASE.fullmatch(v))
                                                                         and passphrase_shaped(v),
    # what messages mask (unlearning.detect.secrets.PasswordShapeDetector): a password covered whole
    "messages' rule (PasswordShapeDetector), the password covered whole": covered_whole,
}


def rule_table(n: int, seed: int) -> tuple[dict[str, int], dict[str, dict[str, int]], list[str]]:
    """({rule: legitimate names masked}, {rule: {password style: caught}}, the distinct names masked by the
    messages' rule, the last)."""
    rng = random.Random(seed)
    names = [legitimate_name(rng) for _ in range(n)]
    passwords = {style: [make(rng) for _ in range(n)] for style, make in PASSWORDS.items()}
    masked_names = {rule: sum(map(test, names)) for rule, test in RULES.items()}
    caught = {rule: {style: sum(map(test, values)) for style, values in passwords.items()}
              for rule, test in RULES.items()}
    last = list(RULES.values())[-1]
    return masked_names, caught, sorted({name for name in names if last(name)})
