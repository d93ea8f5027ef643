"""Numbers formatted as people read them."""



def test_units_read_as_people_read_them():
    from mixdpo_kit.core import units

    assert units.percent(259 / 2000) == "13.0 %" and units.percent(0.004825, 2) == "0.48 %"
    assert units.size(8.1) == "8.1 GiB" and units.size(0.74) == "758 MiB" and units.size(0.0003) == "0.31 MiB"
    assert units.duration(0.42) == "0.42 s" and units.duration(75) == "75 s" and units.duration(600) == "10.0 min"
    assert units.threshold(2.73525) == "2.74" and units.threshold(0.183333) == "0.183"
