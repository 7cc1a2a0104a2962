"""``llmrouter data get NAME``: the published routing data, downloaded (or copied), checked and converted.

The project carries no copy of public datasets. Each NAME lists the files it puts in the data directory
(``routers.data.location``; ``LLMROUTER_DATA``) with the sha256 of each as it lies in ``../shared/data``, and
the public URLs they come from (at pinned commits). A download writes each file beside its target, checks its
checksum, then moves it in; a wrong checksum or no network stops with an error that names the files and the
URLs to fetch by hand, for ``--from DIR``. After the files are in place they are read (and, for RouteLLM's
responses, converted to the project's JSONL) so a bad file is caught here, not in a later training run.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from routers.data.dataset import RoutingDataset
from routers.data.loaders import load_llm_data
from routers.data.multimodel import LLMROUTER_DIR, ROUTERBENCH_DIR, load_llmrouter, load_routerbench
from routers.data.routellm_convert import convert_routellm
from routers.errors import RouterError
from routers.progress import log, progress_bar

CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_S = 60
GITHUB_RAW = "https://raw.githubusercontent.com"
ROUTELLM_COMMIT = "0b64fdafe049e596a3f5657c219329f24af24198"
LLMROUTER_COMMIT = "4e7a796942ce26e9d5f2b93191c7c2585c99c2e3"
ROUTERDC_COMMIT = "0e63989c5bf4363330b8a4616386e3f7f116d9f8"


class DataFetchError(RouterError):
    """The data could not be fetched or did not check out; the message says what to do instead."""


@dataclass(frozen=True)
class PublishedFile:
    """A file as published: where it goes (``path``, relative to the data directory), its sha256 and size,
    and the URL it is published at (None for a file this project derives, which ``--from`` copies)."""

    path: str
    sha256: str
    size: int
    url: str | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class PublishedDataset:
    """One NAME of ``llmrouter data get``.

    ``files`` are what ``--from DIR`` copies and checks (the layout of ``../shared/data``). Where they are
    published as they are, each has its URL and a download fetches them. Where they are this project's
    derivation (RouteLLM's split), a download fetches ``sources`` instead and ``convert`` turns them into
    JSONL; ``--from`` takes either a copy of ``files`` or of ``sources``.
    """

    name: str
    description: str
    files: tuple[PublishedFile, ...]
    sources: tuple[PublishedFile, ...] = ()
    convert: Callable[[dict[str, Path], Path], list[Path]] | None = None

    @property
    def downloads(self) -> tuple[PublishedFile, ...]:
        return self.sources if self.sources else self.files

    def urls(self) -> list[str]:
        return [f.url for f in self.downloads if f.url]


def github_raw(repo: str, commit: str, path: str) -> str:
    return f"{GITHUB_RAW}/{repo}/{commit}/{path}"


# --- RouteLLM: Mixtral-8x7B vs GPT-4 on MMLU and GSM8K ------------------------------------------------------
ROUTELLM_MMLU_DIR = "routellm/evals/mmlu/responses"
ROUTELLM_GSM8K_RESPONSES = "routellm/evals/gsm8k/gsm8k_responses.csv"
ROUTELLM_GSM8K_QUESTIONS = "routellm/evals/gsm8k/test.jsonl"
# sha256 and size of each subject's mmlu_<subject>.csv at ROUTELLM_COMMIT.
ROUTELLM_MMLU_CSVS: dict[str, tuple[str, int]] = {
    "abstract_algebra": ("67e564eea42e71fbfcaf616972df952c316e5538376da1c16d691177458b96b9", 20003),
    "anatomy": ("53ebea8257805eeecc25713728264b8235cffad7b720962a3eafc92fd27ef537", 33922),
    "astronomy": ("49915ece9dfe8aadbd351f221ada2ea86b6f832ce49fa64d1622a0f066c19794", 47647),
    "business_ethics": ("13a45bed754ffe8f0e7f0348e69085c648a1ae0e91aa76cd5e6906fa45f7ec8e", 33854),
    "clinical_knowledge": ("5ea37709bfbad4df7a3fcbd8973413f7645a2adfef9772490f09d3f293ffe882", 64226),
    "college_biology": ("c38620db5b9f6f1b0fde7bc8d8299b8e2305c4dacbb1567c904cd51618d627d5", 49612),
    "college_chemistry": ("78ca6ba22ff25c8fdb93e1c6e84384e72522106c73ed5ee9fed620928ce395ce", 25362),
    "college_computer_science": ("8a7b2a87a36b428c9d1a8f12ce3b01cf7920f0a7146d6f8a111da6749c332da3", 43299),
    "college_mathematics": ("3f22f42779c48509c66e21d7d1fc3054eb0256c1b5b772bb6d9a3af1b253238b", 25385),
    "college_medicine": ("63d71d29e630fc6538e1705a51f4267bdbbdea0fa7ee85056ad7d6f8f10d3987", 83407),
    "college_physics": ("8162a0660d4ef7b963088e0a176d4b8630096127a0d0b5ed003f649cbad34455", 30851),
    "computer_security": ("26446faf7460f03aa2d82a05c170faedb5cbf6d7bdda133b1146229107097d1c", 27712),
    "conceptual_physics": ("ea40473704b64cb60d564ffe91962848ec6fc3106b40089d08cebc98d5c7226d", 42034),
    "econometrics": ("927b4d877cec8697f3b8378bb7e7c7a279babaea2edacf350ea50908701907b9", 47278),
    "electrical_engineering": ("de2fb7c2e9addb4808f5b3f7c79efbfdfb86216235bb7dc28ab70bc53664f11e", 26003),
    "elementary_mathematics": ("88697ff0d238b5852c7a959379dc8b0b45c3554ed4b2ee7cbb7ffc34e06c7cf5", 72419),
    "formal_logic": ("094a462626468569ad595c03e66e73a299188cfa175248b499dba94e005506e6", 50588),
    "global_facts": ("6f75ddf7d6eb94ac0471529a85ff7f8b738c9f4055185b3114eed26393222d06", 19055),
    "high_school_biology": ("444982fc2c750ab8cbc6942a0c0267040aa5023c1d2364247d20e2a28b4e325d", 111417),
    "high_school_chemistry": ("ae5e62479365dcd056354c568f60da65b1df9f1de57dda3953a8e9933a6f12e4", 59694),
    "high_school_computer_science": ("d156d9448a6e899f7f976a0afac148a928bf709a2baa573f0c407854a25bdb11", 45133),
    "high_school_european_history": ("c64afd6c5e30ef0cd5c10beab961ac05e7ba55d6b48cd93bf6ad0a45f90515bf", 271527),
    "high_school_geography": ("21b12044be4a6b9813880ad46372006dc0846e7f85fa46883bb73dbd90fba30a", 43125),
    "high_school_government_and_politics": ("2791689acc61775a5857f4f3a5fd248d30552553c3a96f6ee63dc28285437259", 67164),
    "high_school_macroeconomics": ("73b931a2a06ba74a5c9f1e005d45a25004e36be5d075d98f8ebcf89b3fda367b", 119896),
    "high_school_mathematics": ("151b2a736981b7b20f3bad99de6a573e4692d68cf87020e943b601b70bb37390", 56703),
    "high_school_microeconomics": ("f7ea151efb4c9d96374db3358ac7e97e4d8349e26715f61dac98bc9d854ca046", 77019),
    "high_school_physics": ("1e2103fc8f7f1cfac7c00952b26db2418acab092486af78a9c51c551ae2ff9be", 60489),
    "high_school_psychology": ("d11604f2c7a2425258d5b9a285ef71737c011cc3a91456890f088a0ee4c55212", 162370),
    "high_school_statistics": ("de6642bcd93d7a80e7bbd73d987a44d67b6e537b47749ddc518122fd582703bb", 112040),
    "high_school_us_history": ("a71186d143363e203b2f216d78c9d21f10cca51de455ef176c9c01b77f546592", 298464),
    "high_school_world_history": ("e9c52305977dc37b3e48eee727ad933b2d24d96ca3a06aec865a8900b1e87d2c", 380424),
    "human_aging": ("0d6c4109b4f61f138781ce50bbc60ff2e90dd451694d3926a088be5a5bd88aa8", 47361),
    "human_sexuality": ("20916037e3012731883f926738daf47ed994f74ba25518fdb7f0df72a81143fd", 32866),
    "international_law": ("e389b886e3e1570bfdf798f6f56dc3c675350200c5baf0f41a0766294ff312eb", 54224),
    "jurisprudence": ("7e94c3849231be7b2654db11e44ee51531f8474e300fe83b1e05438df3038f0b", 34614),
    "logical_fallacies": ("fa2d94cd2e901621aaebd0a7e64560b5dbbe4249086795398533eed2561c0c1e", 51102),
    "machine_learning": ("9301e928481be6e20b3541e1ac112b25a4a71338b21592978c0d219cb6240020", 34575),
    "management": ("a00b12ab0265918f9335a85ce02303ddaea0491a7b099f88a05986eeac4aa4fb", 20594),
    "marketing": ("3ee0b6560ebe0eb4f14ce63227d6f6ec8cb8b6e57e345eae9460be742672f36c", 64281),
    "medical_genetics": ("7c830f87dcbc0029137b3400cf361931831cb57dda55717a64e72ad74663d5df", 21444),
    "miscellaneous": ("c2e1a5b0394a8429f55b6340e1865166ac17ec6b3571523005e413b3b2843b9f", 151860),
    "moral_disputes": ("8b2b973b1987b724f39fd10970604d7f1150747a0db9ce766c193bd978c9d0c4", 109870),
    "moral_scenarios": ("78ded6fdca1cd0d5c4ed16a5ed4aebf2e98401b9c00b20e565e6cce5bf1153c7", 379235),
    "nutrition": ("ba197fbf4b6c5034414d66ea7747211056cf5f709f83d919d2d856245720cc51", 94113),
    "philosophy": ("2f30ad01ab529ddea00dff4ff87e950fef838a78754c94f6884120628a7d0591", 81836),
    "prehistory": ("afc816d4b78814627bae9b8c3730a9bb72bd958ff6259fd36c981777cfe83753", 91362),
    "professional_accounting": ("fe5ee976a625832ecf624086103619523d063a3a728c60681b6a53c55b638a37", 126233),
    "professional_law": ("60a4308df4f481ff8840590b29061835207b50a9f06a9fc68baf12b114f7e2e0", 1902501),
    "professional_medicine": ("6fda30b523e4e2ce8b1f18e871a0722190a4ac81ec377a75fbba4a63e0b510f7", 219104),
    "professional_psychology": ("bfb3a7fb653e2b195d3fa258894af64d3f1c3dbd4059c1e0feb728131d20f9b3", 229411),
    "public_relations": ("2196279ea2535fbda62509c3156209b764459a3d515a9ba84b69cf16bb4c27d0", 29421),
    "security_studies": ("1354bb17649f95b7dd8ef3179e22329abe6bef84e639d63370ae9e80b2509905", 206239),
    "sociology": ("903ba6259b13f2877607abef22b7b19cb575104268d4ced615e3129d3caafb47", 67343),
    "us_foreign_policy": ("f1c1d266753a3f161e2018c16c6948fb78c7f5e506a10b4fc0441049962a6c69", 29024),
    "virology": ("d525f1ba88982befd42140e73822fe940e73db82bbdcdd569d95f26c3dd41e68", 39794),
    "world_religions": ("49dc00d44e069ecaac6a7f7e2188f4a8bce5df56ee91bb15f55519d07f64af8e", 26268),
}


def routellm_sources() -> tuple[PublishedFile, ...]:
    mmlu = [PublishedFile(f"{ROUTELLM_MMLU_DIR}/mmlu_{subject}.csv", sha, size,
                          github_raw("lm-sys/RouteLLM", ROUTELLM_COMMIT, f"{ROUTELLM_MMLU_DIR}/mmlu_{subject}.csv"))
            for subject, (sha, size) in ROUTELLM_MMLU_CSVS.items()]
    gsm8k = [
        PublishedFile(ROUTELLM_GSM8K_RESPONSES, "1f38ed03db354a020f71e92022383dc3cf37bbf2694dea4daaeea7b6c43fe57b",
                      1291062, github_raw("lm-sys/RouteLLM", ROUTELLM_COMMIT, ROUTELLM_GSM8K_RESPONSES)),
        PublishedFile(ROUTELLM_GSM8K_QUESTIONS, "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
                      749738, github_raw("lm-sys/RouteLLM", ROUTELLM_COMMIT, ROUTELLM_GSM8K_QUESTIONS)),
    ]
    return (*mmlu, *gsm8k)


def convert_routellm_sources(found: dict[str, Path], dest: Path) -> list[Path]:
    mmlu = [path for key, path in found.items() if key.startswith(ROUTELLM_MMLU_DIR)]
    return convert_routellm(mmlu, found[ROUTELLM_GSM8K_RESPONSES], found[ROUTELLM_GSM8K_QUESTIONS], dest)


ROUTELLM = PublishedDataset(
    name="routellm",
    description="Mixtral-8x7B vs GPT-4 correctness on MMLU and GSM8K (RouteLLM's evaluation responses, "
    f"github.com/lm-sys/RouteLLM@{ROUTELLM_COMMIT[:12]}, Apache-2.0)",
    files=(
        PublishedFile("mmlu_train.jsonl", "32147141871c24825635a0d8c912f14eafa01d93909e7825382c4af6ddfaa4bc", 12281240),
        PublishedFile("mmlu_test.jsonl", "0e84fc66e2b920bc1db72b3e9dffcf1fc08afdad96325f5b790ab32a66c82ca4", 3108288),
        PublishedFile("gsm8k_train.jsonl", "0d5a0da93d6397983e10727be77e80c7f15f3a82a14bcd28e8993a8a40b24d4c", 978182),
        PublishedFile("gsm8k_test.jsonl", "a1a2567a45eb4b00e1bdc22c35e39b5ef0adfcde5a3ad60bd2f52f0327d147aa", 242647),
        PublishedFile("llm_candidates.json", "c7624d3e44102b52142ea71dca69832c05021741e9b99da636af4ff885aa3539", 478),
    ),
    sources=routellm_sources(),
    convert=convert_routellm_sources,
)


# --- LLMRouter: 9 open models on 14 tasks -----------------------------------------------------------------
def llmrouter_file(name: str, repo_path: str, sha256: str, size: int) -> PublishedFile:
    return PublishedFile(str(LLMROUTER_DIR / name), sha256, size,
                         github_raw("ulab-uiuc/LLMRouter", LLMROUTER_COMMIT, f"{repo_path}/{name}"))


LLMROUTER = PublishedDataset(
    name="llmrouter",
    description="9 open models' scores on 14 tasks with prices and descriptions (LLMRouter, "
    f"github.com/ulab-uiuc/LLMRouter@{LLMROUTER_COMMIT[:12]}, MIT)",
    files=(
        llmrouter_file("train.json", "data/dcrouter_preprocessed",
                       "ad3ae70149998f02cbf0dd4557ccb6afcf365ac9391b7371329ffc22201e90e3", 4018466),
        llmrouter_file("test.json", "data/dcrouter_preprocessed",
                       "fbb6d3e3f62c7018e5446d3154cc05812d3124381f774738e9f0bac5bff79c79", 361757),
        llmrouter_file("default_query_train.jsonl", "data/example_data/query_data",
                       "f1b2e3281dc3f9e082016812e1a778ca30e9828c7e58fa0a9f6dc52350ad4b8c", 3519579),
        llmrouter_file("default_query_test.jsonl", "data/example_data/query_data",
                       "0fdf4b4236fb81c1a673a01950fb974e02599c83164b0e7832888aefaa490e27", 405273),
        llmrouter_file("default_llm.json", "data/example_data/llm_candidates",
                       "278f790564efd758ab28a9b6ce141d3fa057219de9bad40b31562c4286549552", 6904),
    ),
)


# --- RouterBench: 11 models with the USD cost of every call -------------------------------------------------
def routerbench_file(name: str, sha256: str, size: int) -> PublishedFile:
    return PublishedFile(str(ROUTERBENCH_DIR / name), sha256, size,
                         github_raw("shuhao02/RouterDC", ROUTERDC_COMMIT, f"datasets/routerbench_zs/{name}"))


ROUTERBENCH = PublishedDataset(
    name="routerbench",
    description="11 models' correctness and per-call USD cost on ARC-Challenge and MBPP (RouterBench's "
    f"zero-shot split as re-split by RouterDC, github.com/shuhao02/RouterDC@{ROUTERDC_COMMIT[:12]}, MIT)",
    files=(
        routerbench_file("arc_challenge_train.csv", "59e044850520be06f74dd9766b9ab4621d783f7fa5269d7dda118b9abb115d78",
                         2579191),
        routerbench_file("arc_challenge_test.csv", "7bffb55faca2e1f9d19f7197c652884780a1e0f7fe14bad5b2b1c6afbe7a6769",
                         1102387),
        routerbench_file("mbpp_train.csv", "2a985adc3a3016b5ae4d62229722cdff9ece58aa1338206a6b12e4957304452b", 3128944),
        routerbench_file("mbpp_test.csv", "156fb843b706b765162d74f5fc4928322be5041791b45bd3e1bd732d998c4032", 1322291),
    ),
)

DATASETS: dict[str, PublishedDataset] = {d.name: d for d in (ROUTELLM, LLMROUTER, ROUTERBENCH)}


def dataset_spec(name: str) -> PublishedDataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataFetchError(f"no dataset {name!r}; choose one of {sorted(DATASETS)}") from None


# --- checksums, copies, downloads -----------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: PublishedFile) -> None:
    actual = sha256_of(path)
    if actual != expected.sha256:
        raise DataFetchError(f"{path}: sha256 {actual} is not the published {expected.sha256} of {expected.path}"
                             + (f" ({expected.url})" if expected.url else "")
                             + "; the file is corrupt or another version")


def already_there(target: Path, expected: PublishedFile) -> bool:
    return target.is_file() and sha256_of(target) == expected.sha256


def install(source: Path, target: Path, expected: PublishedFile) -> None:
    """Check ``source`` and copy it to ``target`` through a temporary file, so a half copy never lies there."""
    check_sha256(source, expected)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    shutil.copyfile(source, partial)  # contents only: a read-only source must not make a read-only copy
    partial.replace(target)


# Tests replace this to simulate no network; it is urllib's opener otherwise.
open_url = urllib.request.urlopen


def download(expected: PublishedFile, target: Path) -> None:
    """Fetch ``expected.url`` to ``target`` with a progress bar, checking the sha256 before it is moved in."""
    assert expected.url is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with open_url(expected.url, timeout=DOWNLOAD_TIMEOUT_S) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or expected.size)
            with progress_bar(expected.name, total=total, unit="B") as bar:
                bar.unit_scale = True  # kB / MB rather than a byte count
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        check_sha256(partial, expected)
    except BaseException:
        partial.unlink(missing_ok=True)  # a cut connection or a wrong checksum leaves nothing behind
        raise
    partial.replace(target)


def by_hand_message(spec: PublishedDataset, dest: Path, reason: str) -> str:
    urls = "\n".join(f"  {url}" for url in spec.urls())
    return (f"cannot download {spec.name} ({reason}). Fetch these files by hand:\n{urls}\n"
            f"then run: llmrouter data get {spec.name} --from DIR --dest {dest}\n"
            "(DIR holds the files, flat or in their repository layout)")


def download_all(spec: PublishedDataset, into: Path, dest: Path) -> dict[str, Path]:
    """Every file of ``spec.downloads`` under ``into`` (skipping those already there and intact)."""
    found: dict[str, Path] = {}
    for expected in spec.downloads:
        target = into / expected.path
        if not already_there(target, expected):
            try:
                download(expected, target)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                raise DataFetchError(by_hand_message(spec, dest, f"{type(exc).__name__}: {exc}")) from exc
        found[expected.path] = target
    return found


def locate(directory: Path, files: Sequence[PublishedFile]) -> tuple[dict[str, Path], list[str]]:
    """Each file in ``directory`` at its own path or flat by its name; and the paths not found."""
    found, missing = {}, []
    for expected in files:
        for candidate in (directory / expected.path, directory / expected.name):
            if candidate.is_file():
                found[expected.path] = candidate
                break
        else:
            missing.append(expected.path)
    return found, missing


# --- the verb ------------------------------------------------------------------------------------------------------
def check_loads(spec: PublishedDataset, dest: Path) -> list[str]:
    """Read what ``get`` put in place, so a bad file fails now; one summary line per file."""
    if spec.name == "llmrouter":
        return [load_llmrouter(dest, split).load_summary() for split in ("train", "test")]
    if spec.name == "routerbench":
        return [load_routerbench(dest, split).load_summary() for split in ("train", "test")]
    llm_data = load_llm_data(dest / "llm_candidates.json")
    jsonl = [dest / f.path for f in spec.files if f.path.endswith(".jsonl") and (dest / f.path).is_file()]
    jsonl += sorted((dest / "routellm").glob("*.jsonl"))
    return [RoutingDataset.from_files(path, llm_data).load_summary() for path in jsonl]


def get(name: str, dest: str | Path, from_dir: str | Path | None = None) -> list[str]:
    """Put dataset ``name`` under ``dest``: from ``from_dir`` when given, else downloaded. Returns summary lines."""
    spec = dataset_spec(name)
    dest = Path(dest).expanduser()
    if from_dir is not None:
        copy_from(spec, Path(from_dir).expanduser(), dest)
    elif spec.sources:
        with tempfile.TemporaryDirectory(prefix=f"llmrouter-{spec.name}-") as staging:
            found = download_all(spec, Path(staging), dest)
            assert spec.convert is not None
            spec.convert(found, dest)
    else:
        download_all(spec, dest, dest)
    return check_loads(spec, dest)


def copy_from(spec: PublishedDataset, source: Path, dest: Path) -> None:
    """``--from DIR``: a copy of ``spec.files`` (checked, copied), else of ``spec.sources`` (checked, converted)."""
    if not source.is_dir():
        raise DataFetchError(f"--from {source}: not a directory")
    found, missing = locate(source, spec.files)
    if not missing:
        for expected in spec.files:
            target = dest / expected.path
            if found[expected.path].resolve() == target.resolve():
                check_sha256(target, expected)
            else:
                install(found[expected.path], target, expected)
            log(f"{spec.name}: {expected.path} ok")
        return
    if spec.sources:
        found_sources, missing_sources = locate(source, spec.sources)
        if not missing_sources:
            for expected in spec.sources:
                check_sha256(found_sources[expected.path], expected)
            assert spec.convert is not None
            for written in spec.convert(found_sources, dest):
                log(f"{spec.name}: wrote {written}")
            return
    raise DataFetchError(f"--from {source}: {spec.name} needs {', '.join(missing)}"
                         + (" (or the published files: " + ", ".join(f.name for f in spec.sources[:3]) + ", ...)"
                            if spec.sources else "")
                         + f"; looked in {source} at each file's path and by its name")
