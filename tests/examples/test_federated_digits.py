def test_federated_digits_example_quick(load_example, tmp_path, capsys):
    example = load_example("federated_digits")
    text = example.main(["--quick", "--samples-per-class", "20", "--epochs", "2", "--rounds", "1",
                         "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    for method in ("fedavg", "fedprox", "centralized", "FederatedFactory/server/gmm", "FederatedFactory/local/gmm"):
        assert method in text
    assert "90.57" in text and "84.30" in text and "11.36" in text  # the paper's figures beside ours
    assert "client_training" in text and "module size" in text
    assert text in out
    assert list((tmp_path / "out" / "seed0_gmm").glob("*.safetensors"))
