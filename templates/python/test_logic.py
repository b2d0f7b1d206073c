"""Unit tests of {{ name }}'s logic: `python3 -m unittest`."""

import unittest

from logic import DEFAULTS, matching_keywords, settings_from


class LogicTest(unittest.TestCase):
    def test_a_keyword_in_the_subject_or_body_matches(self):
        self.assertEqual(matching_keywords("URGENT: help", None, DEFAULTS), ["urgent"])
        self.assertEqual(matching_keywords("Hi", "reply asap", DEFAULTS), ["asap"])

    def test_no_keyword_no_match(self):
        self.assertEqual(matching_keywords("Lunch?", "", DEFAULTS), [])

    def test_config_overrides_defaults(self):
        settings = settings_from([("keywords", "coverage"), ("unknown", "x")])
        self.assertEqual(matching_keywords("Coverage", None, settings), ["coverage"])
        self.assertNotIn("unknown", settings)


if __name__ == "__main__":
    unittest.main()
