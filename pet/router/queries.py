"""Labelled query sets for calibrating and benchmarking the router, built from real offline text.

Three kinds of query, each with a reference answer:

- ``python``: questions about Python standard-library functions; the reference is the first paragraph of
  the function's own docstring (the text ``pydoc`` shows), read from the running interpreter.
- ``personal``: a turn of a real conversation from the chitchat-dataset package; the reference is the reply
  the other person actually sent.
- ``general``: general-knowledge questions with short factual answers, written for this project.

:func:`build_query_set` mixes them deterministically and :func:`split` cuts a calibration part and a test
part that share no query, so the benchmark never scores on the data the calibrators were fitted on.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import random
from dataclasses import asdict, dataclass

PYTHON_MODULES = (
    "os", "os.path", "json", "re", "math", "itertools", "functools", "collections", "string", "textwrap",
    "shutil", "random", "statistics", "heapq", "bisect", "glob", "fnmatch", "base64", "hashlib", "zlib",
    "gzip", "csv", "datetime", "time", "calendar", "difflib", "copy", "pprint", "operator", "urllib.parse",
    "tempfile", "inspect", "html", "uuid", "secrets", "struct", "shlex", "platform", "keyword", "unicodedata",
)
# Added when the set grew past the 521 documented functions of PYTHON_MODULES: drawn only after all of those,
# from a shuffle of their own, so the questions of smaller sets keep their ids and order.
EXTRA_PYTHON_MODULES = (
    "sys", "typing", "dataclasses", "traceback", "codecs", "subprocess", "threading", "logging", "asyncio",
    "socket", "warnings", "pickle", "io",
)

_PY_TEMPLATES = (
    "In Python, what does {name} do?",
    "What is {name} used for in Python?",
    "Explain the Python function {name}.",
    "What does the standard library function {name} return?",
)

GENERAL_QA: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What is the capital of Australia?", "The capital of Australia is Canberra."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("Which planet is closest to the sun?", "Mercury is the planet closest to the sun."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("What is the freezing point of water in Celsius?", "Water freezes at 0 degrees Celsius."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("How many continents are there?", "There are seven continents."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide from the air."),
    ("What is photosynthesis?",
     "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to make glucose and "
     "oxygen."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("What is the chemical formula of water?", "The chemical formula of water is H2O."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest ocean on Earth."),
    ("What is the longest river in the world?", "The Nile is usually named the longest river in the world."),
    ("What is the tallest mountain in the world?", "Mount Everest is the tallest mountain in the world."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What is the speed of light?", "The speed of light is about 300,000 kilometres per second."),
    ("Who developed the theory of relativity?", "Albert Einstein developed the theory of relativity."),
    ("What is the square root of 64?", "The square root of 64 is 8."),
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("What organ pumps blood through the body?", "The heart pumps blood through the body."),
    ("What is the main language spoken in Brazil?", "The main language spoken in Brazil is Portuguese."),
    ("What currency is used in Japan?", "Japan uses the yen."),
    ("What is the hardest natural substance?", "Diamond is the hardest natural substance."),
    ("Which animal is known as the king of the jungle?", "The lion is known as the king of the jungle."),
    ("What do bees make?", "Bees make honey and wax."),
    ("How many hours are in a day?", "There are 24 hours in a day."),
    ("What is the smallest prime number?", "The smallest prime number is 2."),
    ("Who was the first person to walk on the moon?", "Neil Armstrong was the first person to walk on the moon."),
    ("What is the largest mammal?", "The blue whale is the largest mammal."),
    ("What is the primary ingredient in guacamole?", "Avocado is the primary ingredient in guacamole."),
    ("What causes the seasons on Earth?",
     "The seasons are caused by the tilt of the Earth's axis as it orbits the sun."),
    ("What is gravity?", "Gravity is the force by which masses attract each other."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("Which is the largest desert in the world?",
     "The Antarctic is the largest desert; the Sahara is the largest hot desert."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("What color do you get by mixing blue and yellow?", "Mixing blue and yellow gives green."),
    ("What is the plural of mouse?", "The plural of mouse is mice."),
    ("Who invented the telephone?", "Alexander Graham Bell is credited with inventing the telephone."),
    ("What is DNA?", "DNA is the molecule that carries the genetic instructions of living organisms."),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
    ("What is the largest country by area?", "Russia is the largest country by area."),
    ("What instrument has 88 keys?", "The piano has 88 keys."),
    ("What is the main gas in the Earth's atmosphere?", "Nitrogen is the main gas in the Earth's atmosphere."),
    ("Why is the sky blue?",
     "The sky is blue because air scatters blue sunlight more than red light, which is called Rayleigh "
     "scattering."),
    ("What is an atom?", "An atom is the smallest unit of a chemical element, made of protons, neutrons and "
                         "electrons."),
    ("What is a noun?", "A noun is a word that names a person, place, thing or idea."),
    ("How many players are on a soccer team on the field?", "A soccer team has eleven players on the field."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("Which planet is known as the red planet?", "Mars is known as the red planet."),
    ("What do caterpillars turn into?", "Caterpillars turn into butterflies or moths."),
    ("What is the capital of the United Kingdom?", "The capital of the United Kingdom is London."),
    # Appended later (ids are hashes of the text and general_queries(n) takes a prefix, so older sets keep
    # their ids and cached answers).
    ("What is the capital of Russia?", "The capital of Russia is Moscow."),
    ("What is the capital of China?", "The capital of China is Beijing."),
    ("What is the capital of India?", "The capital of India is New Delhi."),
    ("What is the capital of Kenya?", "The capital of Kenya is Nairobi."),
    ("What is the capital of Argentina?", "The capital of Argentina is Buenos Aires."),
    ("What is the capital of Greece?", "The capital of Greece is Athens."),
    ("How many bones are in the adult human body?", "An adult human body has 206 bones."),
    ("How many planets are in the solar system?", "There are eight planets in the solar system."),
    ("What is the largest organ of the human body?", "The skin is the largest organ of the human body."),
    ("What do we call animals that eat only plants?", "Animals that eat only plants are called herbivores."),
    ("What is the chemical symbol for iron?", "The chemical symbol for iron is Fe."),
    ("What is the chemical symbol for sodium?", "The chemical symbol for sodium is Na."),
    ("What gas do humans breathe out?", "Humans breathe out carbon dioxide."),
    ("What is the closest star to the Earth?", "The sun is the closest star to the Earth."),
    ("What is the natural satellite of the Earth?", "The moon is the Earth's natural satellite."),
    ("Who wrote Pride and Prejudice?", "Jane Austen wrote Pride and Prejudice."),
    ("Who composed the Fifth Symphony?", "Ludwig van Beethoven composed the famous Fifth Symphony."),
    ("Who discovered penicillin?", "Alexander Fleming discovered penicillin in 1928."),
    ("Who proposed the theory of evolution by natural selection?",
     "Charles Darwin proposed the theory of evolution by natural selection."),
    ("What is the largest continent?", "Asia is the largest continent."),
    ("How many weeks are in a year?", "A year has 52 weeks."),
    ("How many seconds are in a minute?", "There are 60 seconds in a minute."),
    ("What is 15 plus 27?", "15 plus 27 is 42."),
    ("What is half of 100?", "Half of 100 is 50."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("What is a verb?", "A verb is a word that describes an action, state or occurrence."),
    ("What is an adjective?", "An adjective is a word that describes a noun."),
    ("What is the past tense of go?", "The past tense of go is went."),
    ("What is the boiling point of water in Fahrenheit?", "Water boils at 212 degrees Fahrenheit at sea level."),
    ("What is the main source of energy for the Earth?", "The sun is the main source of energy for the Earth."),
    ("What is the currency of the United Kingdom?", "The currency of the United Kingdom is the pound sterling."),
    ("What is the currency of the United States?", "The currency of the United States is the dollar."),
    ("What language is spoken in Mexico?", "Spanish is the main language spoken in Mexico."),
    ("Which bird is a symbol of peace?", "The dove is a symbol of peace."),
    ("What is the fastest land animal?", "The cheetah is the fastest land animal."),
    ("What is ice made of?", "Ice is frozen water."),
    ("What is a volcano?", "A volcano is an opening in the Earth's crust through which lava, ash and gases "
                           "erupt."),
    ("What is the largest bone in the human body?", "The femur, the thigh bone, is the largest bone in the human "
                                                    "body."),
    ("How many strings does a standard guitar have?", "A standard guitar has six strings."),
    ("What is the freezing point of water in Kelvin?", "Water freezes at 273.15 kelvin."),
    # 200 more, written when the set grew from 500 to 1500 queries (2026-12-02).
    ("What is the capital of Portugal?", "The capital of Portugal is Lisbon."),
    ("What is the capital of Norway?", "The capital of Norway is Oslo."),
    ("What is the capital of Ireland?", "The capital of Ireland is Dublin."),
    ("What is the capital of Austria?", "The capital of Austria is Vienna."),
    ("What is the capital of Turkey?", "The capital of Turkey is Ankara."),
    ("What is the capital of South Korea?", "The capital of South Korea is Seoul."),
    ("What is the capital of Peru?", "The capital of Peru is Lima."),
    ("What is the capital of Morocco?", "The capital of Morocco is Rabat."),
    ("What is the capital of Ethiopia?", "The capital of Ethiopia is Addis Ababa."),
    ("What is the capital of New Zealand?", "The capital of New Zealand is Wellington."),
    ("What is the capital of Mexico?", "The capital of Mexico is Mexico City."),
    ("What is the capital of Brazil?", "The capital of Brazil is Brasilia."),
    ("What is the smallest continent?", "Australia is usually named the smallest continent."),
    ("Which river flows through London?", "The River Thames flows through London."),
    ("What is the largest island in the world?",
     "Greenland is the largest island in the world, not counting Australia, which is a continent."),
    ("Which ocean lies between Europe and North America?",
     "The Atlantic Ocean lies between Europe and North America."),
    ("What is the largest lake in Africa?", "Lake Victoria is the largest lake in Africa by area."),
    ("What imaginary line divides the Earth into the Northern and Southern Hemispheres?",
     "The equator divides the Earth into the Northern and Southern Hemispheres."),
    ("In which country is Machu Picchu?", "Machu Picchu is in Peru."),
    ("Which mountain range is usually taken as part of the border between Europe and Asia?",
     "The Ural Mountains are usually taken as part of the border between Europe and Asia."),
    ("Who formulated the three laws of motion?", "Isaac Newton formulated the three laws of motion."),
    ("What does Newton's first law of motion say?",
     "Newton's first law says an object stays at rest or moves at constant velocity unless a net force acts on it."),
    ("What does the equation E = mc^2 express?",
     "E = mc^2 expresses that mass and energy are equivalent, with energy equal to mass times the speed of light "
     "squared."),
    ("What is the acceleration due to gravity at the Earth's surface?",
     "The acceleration due to gravity at the Earth's surface is about 9.8 metres per second squared."),
    ("What is the speed of sound in air?",
     "The speed of sound in air is about 343 metres per second at room temperature."),
    ("What is friction?", "Friction is the force that resists motion between two surfaces in contact."),
    ("What are the three common states of matter?", "The three common states of matter are solid, liquid and gas."),
    ("What is an electrical conductor?",
     "An electrical conductor is a material, such as copper, that lets electric current flow easily."),
    ("What is kinetic energy?", "Kinetic energy is the energy an object has because of its motion."),
    ("What is the bending of light as it passes from one medium into another called?",
     "The bending of light as it passes from one medium into another is called refraction."),
    ("What happens when white light passes through a prism?",
     "When white light passes through a prism it splits into the colours of the rainbow."),
    ("What is absolute zero?",
     "Absolute zero is the lowest possible temperature, 0 kelvin or minus 273.15 degrees Celsius."),
    ("Which subatomic particle has a negative charge?",
     "The electron is the subatomic particle with a negative charge."),
    ("What is the chemical symbol for silver?", "The chemical symbol for silver is Ag."),
    ("What is the chemical symbol for potassium?", "The chemical symbol for potassium is K."),
    ("What is the chemical symbol for lead?", "The chemical symbol for lead is Pb."),
    ("What is the chemical formula of table salt?", "The chemical formula of table salt, sodium chloride, is NaCl."),
    ("What is the chemical formula of carbon dioxide?", "The chemical formula of carbon dioxide is CO2."),
    ("What is the lightest chemical element?", "Hydrogen is the lightest chemical element."),
    ("What is the atomic number of carbon?", "The atomic number of carbon is 6."),
    ("What is the pH of pure water?", "Pure water has a pH of 7 at 25 degrees Celsius, which is neutral."),
    ("Which metal is liquid at room temperature?", "Mercury is the metal that is liquid at room temperature."),
    ("Which noble gas is used in glowing red advertising signs?",
     "Neon is the noble gas used in glowing red advertising signs."),
    ("What is rust?", "Rust is iron oxide, formed when iron reacts with oxygen and water."),
    ("Who is credited with creating the periodic table?",
     "Dmitri Mendeleev is credited with creating the periodic table in 1869."),
    ("How are elements ordered in the periodic table?",
     "Elements in the periodic table are ordered by increasing atomic number."),
    ("What is known as the powerhouse of the cell?", "The mitochondrion is known as the powerhouse of the cell."),
    ("What is the basic unit of life?", "The cell is the basic unit of life."),
    ("What pigment makes plants green?", "Chlorophyll is the pigment that makes plants green."),
    ("What do we call an animal that eats both plants and meat?",
     "An animal that eats both plants and meat is called an omnivore."),
    ("What is mitosis?", "Mitosis is cell division that produces two cells genetically identical to the parent cell."),
    ("Which part of a plant absorbs water from the soil?", "The roots absorb water from the soil."),
    ("What is the study of living things called?", "The study of living things is called biology."),
    ("Is a mushroom a plant?", "A mushroom is not a plant; it is the fruiting body of a fungus."),
    ("What shape is the DNA molecule?", "The DNA molecule has the shape of a double helix."),
    ("Who described the double-helix structure of DNA in 1953?",
     "James Watson and Francis Crick described the double-helix structure of DNA in 1953."),
    ("Who is known as the father of genetics?", "Gregor Mendel is known as the father of genetics."),
    ("What is a food chain?",
     "A food chain is a sequence showing how energy passes from one organism to another as each is eaten."),
    ("What do bees carry from flower to flower to pollinate plants?",
     "Bees carry pollen from flower to flower to pollinate plants."),
    ("What is the hottest planet in the solar system?", "Venus is the hottest planet in the solar system."),
    ("Which planet is famous for its large rings?", "Saturn is the planet famous for its large rings."),
    ("What galaxy do we live in?", "We live in the Milky Way galaxy."),
    ("How long does the Earth take to orbit the sun?", "The Earth takes about 365.25 days to orbit the sun."),
    ("What is the smallest planet in the solar system?", "Mercury is the smallest planet in the solar system."),
    ("Which planet is farthest from the sun?", "Neptune is the planet farthest from the sun."),
    ("What is a light-year?",
     "A light-year is the distance light travels in one year, about 9.46 trillion kilometres."),
    ("What causes a solar eclipse?", "A solar eclipse happens when the moon passes between the Earth and the sun."),
    ("What causes a lunar eclipse?", "A lunar eclipse happens when the Earth passes between the sun and the moon."),
    ("How long does sunlight take to reach the Earth?", "Sunlight takes about eight minutes to reach the Earth."),
    ("How is Pluto classified?", "Pluto is classified as a dwarf planet, a change made in 2006."),
    ("What was the first artificial satellite?",
     "Sputnik 1, launched by the Soviet Union in 1957, was the first artificial satellite."),
    ("What is Jupiter's Great Red Spot?", "Jupiter's Great Red Spot is a giant storm in the planet's atmosphere."),
    ("How many chambers does the human heart have?", "The human heart has four chambers."),
    ("Which organs filter the blood to make urine?", "The kidneys filter the blood to make urine."),
    ("How many teeth does an adult human usually have?",
     "An adult human usually has 32 teeth, including the wisdom teeth."),
    ("What is the smallest bone in the human body?",
     "The stapes, in the middle ear, is the smallest bone in the human body."),
    ("What is the normal human body temperature?",
     "Normal human body temperature is usually given as about 37 degrees Celsius."),
    ("What carries oxygen in red blood cells?", "Haemoglobin carries oxygen in red blood cells."),
    ("Which blood type is known as the universal donor?", "O negative is known as the universal donor blood type."),
    ("Which organ stores bile?", "The gallbladder stores bile, which is made by the liver."),
    ("Which vitamin does the skin make in sunlight?", "The skin makes vitamin D when exposed to sunlight."),
    ("What connects muscles to bones?", "Tendons connect muscles to bones."),
    ("Which part of the eye controls how much light enters it?",
     "The iris controls how much light enters the eye by changing the size of the pupil."),
    ("Which organ produces insulin?", "The pancreas produces the hormone insulin."),
    ("How many chromosomes do humans normally have?", "Humans normally have 46 chromosomes, in 23 pairs."),
    ("In what year did World War II end?", "World War II ended in 1945."),
    ("In what year did World War I begin?", "World War I began in 1914."),
    ("Who was the first President of the United States?",
     "George Washington was the first President of the United States."),
    ("In what year did Christopher Columbus first reach the Americas?",
     "Christopher Columbus first reached the Americas in 1492."),
    ("In what year did the Berlin Wall fall?", "The Berlin Wall fell in 1989."),
    ("In what year did the Titanic sink?", "The Titanic sank in 1912."),
    ("Who was the first woman to win a Nobel Prize?",
     "Marie Curie was the first woman to win a Nobel Prize, in 1903."),
    ("Who built the pyramids of Giza?", "The pyramids of Giza were built by the ancient Egyptians."),
    ("In what year was the United States Declaration of Independence adopted?",
     "The United States Declaration of Independence was adopted in 1776."),
    ("Who introduced the movable-type printing press to Europe?",
     "Johannes Gutenberg introduced the movable-type printing press to Europe in the fifteenth century."),
    ("Who led India's non-violent movement for independence from Britain?",
     "Mahatma Gandhi led India's non-violent movement for independence from Britain."),
    ("In what year did the French Revolution begin?", "The French Revolution began in 1789."),
    ("Who was the first person to travel into space?",
     "Yuri Gagarin was the first person to travel into space, in 1961."),
    ("Who wrote the novel 1984?", "George Orwell wrote the novel 1984."),
    ("Who wrote Don Quixote?", "Miguel de Cervantes wrote Don Quixote."),
    ("Who wrote War and Peace?", "Leo Tolstoy wrote War and Peace."),
    ("Who wrote the Odyssey?", "The Odyssey is traditionally attributed to the ancient Greek poet Homer."),
    ("Who wrote Moby-Dick?", "Herman Melville wrote the novel Moby-Dick."),
    ("Who wrote Oliver Twist?", "Charles Dickens wrote Oliver Twist."),
    ("Who wrote Frankenstein?", "Mary Shelley wrote the novel Frankenstein."),
    ("Who wrote Alice's Adventures in Wonderland?", "Lewis Carroll wrote Alice's Adventures in Wonderland."),
    ("Who painted The Starry Night?", "Vincent van Gogh painted The Starry Night."),
    ("Who painted the ceiling of the Sistine Chapel?", "Michelangelo painted the ceiling of the Sistine Chapel."),
    ("Who painted Guernica?", "Pablo Picasso painted the mural Guernica."),
    ("Who composed the opera The Magic Flute?", "Wolfgang Amadeus Mozart composed the opera The Magic Flute."),
    ("Who composed The Four Seasons?", "Antonio Vivaldi composed The Four Seasons."),
    ("What is 7 times 8?", "7 times 8 is 56."),
    ("What is 100 divided by 4?", "100 divided by 4 is 25."),
    ("What is 9 squared?", "9 squared, or 9 times 9, is 81."),
    ("What is 25 percent of 200?", "25 percent of 200 is 50."),
    ("What is 1000 minus 375?", "1000 minus 375 is 625."),
    ("What is 3 cubed?", "3 cubed, or 3 times 3 times 3, is 27."),
    ("What is 38 plus 47?", "38 plus 47 is 85."),
    ("Is 17 a prime number?", "Yes, 17 is a prime number because its only divisors are 1 and itself."),
    ("What is the next prime number after 7?", "The next prime number after 7 is 11."),
    ("How many degrees are in a right angle?", "A right angle has 90 degrees."),
    ("What do the angles of a triangle add up to?", "The angles of a triangle add up to 180 degrees."),
    ("What is the value of pi to two decimal places?", "The value of pi to two decimal places is 3.14."),
    ("What number does the Roman numeral L stand for?", "The Roman numeral L stands for 50."),
    ("How many centimetres are in a metre?", "There are 100 centimetres in a metre."),
    ("How many grams are in a kilogram?", "There are 1,000 grams in a kilogram."),
    ("How many millilitres are in a litre?", "There are 1,000 millilitres in a litre."),
    ("How many inches are in a foot?", "There are 12 inches in a foot."),
    ("How many feet are in a yard?", "There are 3 feet in a yard."),
    ("How many centimetres are in an inch?", "There are 2.54 centimetres in an inch."),
    ("How many kilometres are in a mile?", "A mile is about 1.609 kilometres."),
    ("How many years are in a century?", "There are 100 years in a century."),
    ("What is the SI unit of electric current?", "The SI unit of electric current is the ampere."),
    ("What is the SI unit of force?", "The SI unit of force is the newton."),
    ("What is the SI unit of power?", "The SI unit of power is the watt."),
    ("What does a barometer measure?", "A barometer measures atmospheric pressure."),
    ("What is measured in decibels?", "The loudness, or sound level, of a sound is measured in decibels."),
    ("What does CPU stand for?", "CPU stands for central processing unit."),
    ("What does RAM stand for?", "RAM stands for random-access memory."),
    ("What does URL stand for?", "URL stands for uniform resource locator."),
    ("What does GPS stand for?", "GPS stands for Global Positioning System."),
    ("What does USB stand for?", "USB stands for Universal Serial Bus."),
    ("What does HTML stand for?", "HTML stands for HyperText Markup Language."),
    ("What does LED stand for?", "LED stands for light-emitting diode."),
    ("What does PDF stand for?", "PDF stands for Portable Document Format."),
    ("How many bits are in a byte?", "There are eight bits in a byte."),
    ("Which two digits does the binary number system use?", "The binary number system uses the digits 0 and 1."),
    ("Who invented the World Wide Web?", "Tim Berners-Lee invented the World Wide Web, proposing it in 1989."),
    ("How does a microwave oven heat food?",
     "A microwave oven heats food with microwaves that make the water molecules in it vibrate."),
    ("Which way does a compass needle point?", "A compass needle points towards magnetic north."),
    ("What is the largest living bird?", "The ostrich is the largest living bird."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
    ("How many legs does an insect have?", "An insect has six legs."),
    ("What is a baby cat called?", "A baby cat is called a kitten."),
    ("What is a group of lions called?", "A group of lions is called a pride."),
    ("What is the largest land animal?", "The African elephant is the largest land animal."),
    ("Which mammal can truly fly?", "The bat is the only mammal capable of true flight."),
    ("How many hearts does an octopus have?", "An octopus has three hearts."),
    ("What do giant pandas mainly eat?", "Giant pandas mainly eat bamboo."),
    ("Which animal is known as the ship of the desert?", "The camel is known as the ship of the desert."),
    ("Is a whale a fish?", "A whale is not a fish; it is a mammal that breathes air."),
    ("Which flightless birds live in Antarctica?", "Penguins are the flightless birds that live in Antarctica."),
    ("What is the main ingredient in hummus?", "Chickpeas are the main ingredient in hummus."),
    ("What is tofu made from?", "Tofu is made from soybeans."),
    ("What fruit is dried to make raisins?", "Grapes are dried to make raisins."),
    ("What vegetable are French fries made from?", "French fries are made from potatoes."),
    ("Which nut is used to make marzipan?", "Almonds are used to make marzipan."),
    ("What is the main ingredient of an omelette?", "Eggs are the main ingredient of an omelette."),
    ("What is popcorn made from?", "Popcorn is made from kernels of a type of maize, or corn."),
    ("Which vitamin are oranges well known for?", "Oranges are well known for vitamin C."),
    ("What is chocolate made from?", "Chocolate is made from the beans of the cacao tree."),
    ("Which spice gives curry its yellow colour?", "Turmeric is the spice that gives curry its yellow colour."),
    ("What is cheese made from?", "Cheese is made from milk."),
    ("What is the Japanese dish of thinly sliced raw fish called?",
     "The Japanese dish of thinly sliced raw fish is called sashimi."),
    ("In which city did modern pizza originate?", "Modern pizza originated in Naples, Italy."),
    ("What is the plural of child?", "The plural of child is children."),
    ("What is the past tense of eat?", "The past tense of eat is ate."),
    ("What is a synonym?", "A synonym is a word that has the same or nearly the same meaning as another word."),
    ("What is an antonym?", "An antonym is a word that has the opposite meaning of another word."),
    ("What is a pronoun?", "A pronoun is a word, such as he or it, that takes the place of a noun."),
    ("What is an adverb?", "An adverb is a word that describes a verb, an adjective or another adverb."),
    ("How many letters are in the English alphabet?", "The English alphabet has 26 letters."),
    ("What are the vowels in the English alphabet?",
     "The vowels in the English alphabet are A, E, I, O and U, and sometimes Y."),
    ("What is the official language of Egypt?", "The official language of Egypt is Arabic."),
    ("What does bonjour mean in French?", "In French, bonjour means hello or good day."),
    ("What is a palindrome?",
     "A palindrome is a word or phrase that reads the same backwards as forwards, like level."),
    ("What is the first letter of the Greek alphabet?", "The first letter of the Greek alphabet is alpha."),
    ("Which alphabet is used to write Russian?", "Russian is written in the Cyrillic alphabet."),
    ("How many players does a basketball team have on the court?", "A basketball team has five players on the court."),
    ("How many players does a volleyball team have on the court?", "A volleyball team has six players on the court."),
    ("How many holes are on a standard golf course?", "A standard golf course has 18 holes."),
    ("How many points is a touchdown worth in American football?",
     "A touchdown is worth six points in American football."),
    ("How long is a marathon?", "A marathon is 42.195 kilometres, or about 26.2 miles, long."),
    ("What is a score of zero called in tennis?", "In tennis, a score of zero is called love."),
    ("How many players are on a cricket team?", "A cricket team has eleven players."),
    ("Which chess piece moves only diagonally?", "The bishop is the chess piece that moves only diagonally."),
    ("How long is a professional soccer match?",
     "A professional soccer match lasts 90 minutes, in two halves of 45 minutes, plus stoppage time."),
    ("How many strikes make an out in baseball?", "In baseball, three strikes make an out."),
    ("Which sport uses a shuttlecock?", "Badminton is the sport that uses a shuttlecock."),
    ("In golf, what is a score of one stroke under par called?",
     "In golf, a score of one stroke under par on a hole is called a birdie."),
)


@dataclass
class Query:
    """One labelled query: the text a user sends and a reference answer."""

    id: str
    kind: str  # "python" | "personal" | "general"
    query: str
    reference: str

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def _qid(kind: str, text: str) -> str:
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _first_paragraph(doc: str) -> str:
    paras = [p.strip() for p in doc.split("\n\n") if p.strip()]
    # Builtin docstrings open with a signature line such as "join(a, *p)"; skip it.
    while paras and "(" in paras[0].split("\n")[0] and paras[0].rstrip().endswith(")") and len(paras) > 1:
        paras = paras[1:]
    return " ".join(paras[0].split()) if paras else ""


def python_queries(n: int, seed: int = 0) -> list[Query]:
    """``n`` questions about documented stdlib functions, reference = first docstring paragraph.

    The first ``n`` of a larger call are the same questions (a prefix), so growing ``n`` keeps old ids. The
    pool depends on the interpreter's modules: importing torch first (as benchmarks/routing_generate.py does)
    adds one inspect function, which reorders the shuffle; build the set the same way every time.
    """
    rng = random.Random(seed)
    found = _documented_functions(PYTHON_MODULES)
    names = sorted(found)
    rng.shuffle(names)
    extra = _documented_functions(EXTRA_PYTHON_MODULES)
    more = sorted(set(extra) - set(found))
    random.Random(seed + 1).shuffle(more)
    found.update(extra)
    out = []
    for name in (names + more)[:n]:
        q = rng.choice(_PY_TEMPLATES).format(name=name)
        out.append(Query(_qid("python", q), "python", q, found[name]))
    return out


def _documented_functions(modules: tuple[str, ...]) -> dict[str, str]:
    """``module.function`` -> first docstring paragraph, for the public functions with a 6-80 word one."""
    found: dict[str, str] = {}
    for modname in modules:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            if not (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            ref = _first_paragraph(inspect.getdoc(obj) or "")
            if 6 <= len(ref.split()) <= 80:
                found.setdefault(f"{modname}.{attr}", ref)
    return found


def personal_queries(n: int, seed: int = 0) -> list[Query]:
    """``n`` conversation turns from chitchat-dataset with the partner's actual reply as reference."""
    import chitchat_dataset

    rng = random.Random(seed)
    convs = list(chitchat_dataset.Dataset().values())
    rng.shuffle(convs)
    out: list[Query] = []
    seen = set()
    for conv in convs:
        turns = [" ".join(m["text"].strip() for m in turn) for turn in conv.get("messages", [])]
        pairs = [(a, b) for a, b in zip(turns, turns[1:], strict=False)
                 if 5 <= len(a.split()) <= 40 and 4 <= len(b.split()) <= 40]
        if not pairs:
            continue
        a, b = rng.choice(pairs)
        if a in seen:
            continue
        seen.add(a)
        out.append(Query(_qid("personal", a), "personal", a, b))
        if len(out) >= n:
            break
    return out


def general_queries(n: int | None = None) -> list[Query]:
    """The written general-knowledge questions (all, or the first ``n``)."""
    qa = GENERAL_QA if n is None else GENERAL_QA[:n]
    return [Query(_qid("general", q), "general", q, a) for q, a in qa]


def build_query_set(n_python: int, n_personal: int, n_general: int, seed: int = 0) -> list[Query]:
    """A deterministic mix of the three kinds, shuffled."""
    qs = python_queries(n_python, seed) + personal_queries(n_personal, seed) + general_queries(n_general)
    random.Random(seed).shuffle(qs)
    return qs


def split(queries: list[Query], calibration_fraction: float = 0.5) -> tuple[list[Query], list[Query]]:
    """Cut into (calibration, test) by a hash of the id, so the cut does not depend on list order."""
    cal, test = [], []
    for q in queries:
        h = int(hashlib.sha256(q.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (cal if h < calibration_fraction else test).append(q)
    return cal, test
