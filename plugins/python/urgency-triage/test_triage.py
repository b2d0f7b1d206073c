"""Unit tests of the triage logic: `python -m unittest` in this directory."""

import unittest

from triage import DEFAULTS, decide, settings_from, split_list


class TriageTest(unittest.TestCase):
    def test_no_keyword_and_no_tier_is_p3(self):
        d = decide("Lunch?", "see you", "", DEFAULTS)
        self.assertEqual((d.priority, d.urgent), ("P3", False))

    def test_a_keyword_in_the_body_is_p2(self):
        d = decide("Hello", "Our site has an OUTAGE", "standard", DEFAULTS)
        self.assertEqual((d.priority, d.keywords), ("P2", ["outage"]))

    def test_a_raising_tier_lifts_a_keyword_hit_to_p1(self):
        d = decide("URGENT: claim", None, "Gold", DEFAULTS)
        self.assertEqual((d.priority, d.raised_by_tier), ("P1", True))

    def test_a_raising_tier_alone_is_p2(self):
        self.assertEqual(decide("Hi", "", "vip", DEFAULTS).priority, "P2")

    def test_config_overrides_defaults_and_ignores_unknown_keys(self):
        s = settings_from([("keywords", "coverage"), ("colour", "red")])
        self.assertEqual(s["keywords"], "coverage")
        self.assertNotIn("colour", s)
        self.assertEqual(decide("Coverage", None, "", s).priority, "P2")

    def test_split_list_lowercases_and_drops_blanks(self):
        self.assertEqual(split_list(" A, b ,, "), ["a", "b"])


if __name__ == "__main__":
    unittest.main()
