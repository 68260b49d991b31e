import sys

from habitbot.bot.app import main

sys.exit(main())
