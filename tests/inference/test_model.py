"""The real bundled MiniLM through the pool: shapes, norms, meaning, labels, versions, int8."""

from __future__ import annotations

import re

import numpy as np
import pytest

from config.settings import Settings
from inference.encoder import BUNDLED_NAME, Encoder, bundled_model_dir, weights_hash
from inference.errors import ModelLoadError
from inference.pool import ModelPool, Priority
from inference.tasks import DOCUMENT_TYPE, TRANSACTION_CATEGORY, Classification, Tasks
from inference.vectors import cosine
from scenarios.finance import COUNTERPARTIES, MEMOS

EXPECTED_CATEGORY = {
    "invoice": "supplier_payment", "salary": "salary", "rent": "rent", "utilities": "utilities",
    "refund order": "refund", "consulting fees": "fees", "insurance premium": "insurance",
    "office supplies": "supplier_payment",
}


def pool_for(encoder: Encoder, **options: object) -> ModelPool:
    return ModelPool(encoder, max_wait_ms=2.0, warmup=False, **options)  # type: ignore[arg-type]


@pytest.mark.slow  # loads the MiniLM model
async def test_embeddings_are_384_dim_unit_vectors_in_input_order(minilm: Encoder) -> None:
    texts = ["invoice 48213", "salary March 2024", "Northwind Traders"]
    async with pool_for(minilm) as pool:
        vectors = await pool.embed(texts, Priority.REPLAY)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[1], minilm.encode(["salary March 2024"])[0], atol=1e-5)


@pytest.mark.slow  # loads the MiniLM model
def test_pooling_matches_sentence_transformers(minilm: Encoder) -> None:
    st = pytest.importorskip("sentence_transformers")  # installed with the bundled model package
    reference = st.SentenceTransformer(str(bundled_model_dir()), device="cpu", local_files_only=True)
    texts = ["refund order 10077 from Contoso Ltd", "x", "consulting fees November 2023 " * 40]
    expected = reference.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.encode(texts), expected, atol=1e-5)


@pytest.mark.slow  # loads the MiniLM model
async def test_similar_texts_score_higher_than_unrelated_ones(minilm: Encoder) -> None:
    async with pool_for(minilm) as pool:
        tasks = Tasks(pool)
        close = await tasks.similarity("Northwind Traders", "Northwind Traders Ltd")
        far = await tasks.similarity("Northwind Traders", "insurance premium March 2024")
        matrix = await tasks.similarity_matrix(["rent March 2024", "Contoso Ltd"],
                                               ["Contoso Limited", "monthly rent for March 2024"])
    assert close > far and close > 0.8
    assert matrix.argmax(axis=1).tolist() == [1, 0]


@pytest.mark.slow  # loads the MiniLM model
async def test_a_clear_invoice_is_classified_as_invoice(minilm: Encoder) -> None:
    async with pool_for(minilm) as pool:
        tasks = Tasks(pool)
        await tasks.prepare()
        result = await tasks.classify_one(DOCUMENT_TYPE, (
            "Invoice 2024-118 from Fabrikam Inc. Total amount due EUR 3,400.00 within 14 days."))
        others = await tasks.classify(DOCUMENT_TYPE, [
            "Income tax return 2023: wages, deductions and tax due",
            "Application form for housing benefit",
            "Thank you for your purchase. Card payment approved. Total paid 12.50",
        ])
    assert result == Classification("invoice", result.score, minilm.version, DOCUMENT_TYPE)
    assert 0.0 < result.score <= 1.0
    assert [r.label for r in others] == ["tax_return", "benefit_application", "receipt"]


def scenario_memos() -> list[str]:
    return [m.format(n=n, m=month) for m in MEMOS
            for n, month in ((48213, "March 2024"), (10077, "November 2023"))]


def assert_sensible_categories(results: list[Classification]) -> None:
    for memo, result in zip(scenario_memos(), results, strict=True):
        prefix = next(p for p in EXPECTED_CATEGORY if memo.startswith(p))
        assert result.label == EXPECTED_CATEGORY[prefix], memo
        assert result.task == TRANSACTION_CATEGORY


@pytest.mark.slow  # loads the MiniLM model
async def test_scenario_memos_map_to_sensible_categories(minilm: Encoder) -> None:
    async with pool_for(minilm) as pool:
        assert_sensible_categories(await Tasks(pool).classify(TRANSACTION_CATEGORY, scenario_memos()))


@pytest.mark.slow  # loads the MiniLM model
async def test_agent_texts_with_counterparty_prefix_are_categorized(minilm: Encoder) -> None:
    """What the enrichment agent sends: "<counterparty>: <memo>" for every scenario pair."""
    texts, expected = [], []
    for counterparty in COUNTERPARTIES:
        for memo in scenario_memos():
            texts.append(f"{counterparty}: {memo}")
            expected.append(EXPECTED_CATEGORY[next(p for p in EXPECTED_CATEGORY if memo.startswith(p))])
    async with pool_for(minilm) as pool:
        results = await Tasks(pool).classify(TRANSACTION_CATEGORY, texts, Priority.BACKFILL)
    correct = sum(r.label == e for r, e in zip(results, expected, strict=True))
    assert correct / len(texts) >= 0.95  # measured: 208 of 208


@pytest.mark.slow  # loads the MiniLM model
def test_unknown_task_is_refused_with_the_known_ones(minilm: Encoder) -> None:
    with pytest.raises(ValueError, match="known: document_type, transaction_category"):
        Tasks(pool_for(minilm)).labels("sentiment")


@pytest.mark.slow  # loads the MiniLM model
def test_version_names_the_model_and_hashes_its_weights(minilm: Encoder) -> None:
    assert re.fullmatch(rf"{re.escape(BUNDLED_NAME)}@[0-9a-f]{{12}}", minilm.version)
    assert minilm.version.endswith(weights_hash(minilm.model_dir))
    assert minilm.dim == 384 and minilm.device == "cpu"


@pytest.mark.slow  # loads the MiniLM model
async def test_int8_runs_on_cpu_close_to_fp32_with_the_same_labels(minilm: Encoder) -> None:
    int8 = Encoder(device="cpu", precision="int8")
    texts = scenario_memos() + ["Northwind Traders", "Contoso Ltd"]
    quantized, full = int8.encode(texts), minilm.encode(texts)
    assert quantized.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    cosines = [cosine(q, f) for q, f in zip(quantized, full, strict=True)]
    assert min(cosines) > 0.93 and float(np.mean(cosines)) > 0.96  # measured: ~0.95 and ~0.97
    assert int8.version == f"{minilm.version}+int8"  # different numbers, different version
    async with pool_for(int8) as pool:
        assert_sensible_categories(await Tasks(pool).classify(TRANSACTION_CATEGORY, scenario_memos()))


def test_bad_configurations_are_refused_before_loading(tmp_path: object) -> None:
    with pytest.raises(ModelLoadError, match="fp16 runs on a CUDA GPU only"):
        Encoder(device="cpu", precision="fp16")
    with pytest.raises(ModelLoadError, match="does not exist"):
        Encoder(model_dir=bundled_model_dir() / "missing", device="cpu")
    with pytest.raises(ModelLoadError, match="cannot load a model"):
        Encoder(model_dir=tmp_path, device="cpu")  # type: ignore[arg-type]


@pytest.mark.slow  # loads the MiniLM model
async def test_pool_from_settings_loads_warms_up_and_serves() -> None:
    settings = Settings(inference_device="cpu", inference_max_batch=8, inference_cache_size=10)
    async with ModelPool.from_settings(settings) as pool:
        assert pool.max_batch == 8 and pool.cache.max_size == 10
        vectors = await pool.embed(["salary March 2024"])
        assert pool.model_version.startswith(f"{BUNDLED_NAME}@")
    assert vectors.shape == (1, 384)
